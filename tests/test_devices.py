"""GPU decisions simulated on a CPU: device description, TF32, memory growth, precision from
the device that runs the network, the dilated-convolution gradient path per device, the
--jit --deterministic policy and synchronised BatchNorm's single all-reduce."""


import numpy as np
import pytest
import tensorflow as tf

from deeplab_resnet.runtime import devices
from deeplab_resnet.model import layers
from deeplab_resnet.runtime import precision
from deeplab_resnet.errors import SettingError

A100 = devices.Gpu("NVIDIA A100-SXM4-40GB", (8, 0))
T4 = devices.Gpu("Tesla T4", (7, 5))


@pytest.fixture
def tf32_restored():
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    yield
    tf.config.experimental.enable_tensor_float_32_execution(before)


def test_describe_names_the_devices_and_their_tf32_state():
    assert devices.describe((), built_with_cuda=False) == "devices: CPU (no GPU visible)"
    missing = devices.describe((), built_with_cuda=True)
    assert missing.startswith("devices: CPU (no GPU visible; ") and "CUDA" in missing
    assert devices.describe((A100,), tf32=False) == (
        "devices: GPU:0 NVIDIA A100-SXM4-40GB (compute capability 8.0); TF32 off (true float32)")
    assert "TF32 on" in devices.describe((T4, A100), tf32=True)
    assert devices.describe((T4,), tf32=True) == (
        "devices: GPU:0 Tesla T4 (compute capability 7.5)")  # no TF32 before Ampere


def test_this_machine_is_described_as_a_cpu(caplog):
    with caplog.at_level("INFO", logger="deeplab_resnet"):
        devices.log_devices()
    assert caplog.messages[-1].startswith("devices: CPU (no GPU visible")


def test_use_tf32(tf32_restored):
    devices.use_tf32(False)
    assert not devices.tf32_enabled()
    devices.use_tf32(True)
    assert tf.config.experimental.tensor_float_32_execution_enabled()


def test_memory_growth_is_set_on_every_gpu(monkeypatch):
    grown = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: ["gpu0", "gpu1"])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth",
                        lambda device, on: grown.append((device, on)))
    devices.use_memory_growth()
    assert grown == [("gpu0", True), ("gpu1", True)]

    def too_late(device, on):
        raise RuntimeError("Physical devices cannot be modified after being initialized")
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", too_late)
    with pytest.raises(SettingError, match="TF_FORCE_GPU_ALLOW_GROWTH") as error:
        devices.use_memory_growth()
    assert error.value.fields == ("memory_growth",)


def test_jit_with_determinism_is_refused():
    with pytest.raises(SettingError, match="select-and-scatter") as error:
        devices.check_jit_determinism(True, True)
    assert error.value.fields == ("jit", "deterministic")
    assert "\n" not in str(error.value)
    devices.check_jit_determinism(True, False)
    devices.check_jit_determinism(False, True)


def test_training_refuses_jit_with_determinism_in_one_line(tmp_path, capsys):
    from deeplab_resnet import cli
    from deeplab_resnet.cli import train
    with pytest.raises(SystemExit) as exit_info:
        cli.run(train.main, ["--data-dir", str(tmp_path), "--data-list", str(tmp_path / "none"),
                             "--snapshot-dir", str(tmp_path / "snap"), "--jit",
                             "--deterministic"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: --jit with --deterministic is refused") and err.count("\n") == 1


# -- precision from the device that runs the network ---------------------------------------

AMX_HOST = frozenset({"avx512f", "amx_bf16", "amx_fp16", "avx512_fp16"})


@pytest.mark.parametrize("capabilities, bf16, fp16", [
    (((6, 1),), False, False),   # Pascal: fp16 at 1/64 rate
    (((7, 0),), False, True),    # V100
    (((7, 5),), False, True),    # T4
    (((8, 0),), True, True),     # A100
    (((9, 0), (7, 5)), False, True),  # every GPU must run it (each may run a replica)
])
def test_a_gpu_decides_alone_never_the_host_cpu(capabilities, bf16, fp16):
    hardware = precision.Hardware(cpu_flags=AMX_HOST, gpu_capabilities=capabilities)
    assert hardware.supports("bf16") == bf16 and hardware.supports("fp16") == fp16
    expected = tf.bfloat16 if bf16 else tf.float32
    assert precision.resolve("bf16", hardware) == expected
    expected = tf.float16 if fp16 else tf.float32
    assert precision.resolve("fp16", hardware) == expected


def test_without_a_gpu_the_cpu_flags_decide():
    assert precision.Hardware(cpu_flags=AMX_HOST).supports("bf16")
    assert precision.resolve("bf16", precision.Hardware(AMX_HOST)) == tf.bfloat16
    assert precision.resolve("bf16", precision.Hardware()) == tf.float32


def test_detect_reads_the_gpus_from_the_device_list(monkeypatch):
    monkeypatch.setattr(devices, "visible_gpus", lambda: (T4, devices.Gpu("x", None)))
    assert precision.detect().gpu_capabilities == ((7, 5), (0, 0))


# -- which gradient a dilated convolution takes -------------------------------------------

def _gradient_ops(device=None):
    """Op types of a traced dilated convolution's gradient, built on `device` (None: unpinned)."""
    x = tf.TensorSpec([1, 13, 13, 4], tf.float32)
    w = tf.TensorSpec([3, 3, 4, 2], tf.float32)

    @tf.function
    def gradient(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            if device is None:
                y = layers.conv2d(x, w, pad=2, dilation=2)
            else:
                with tf.device(device):
                    y = layers.conv2d(x, w, pad=2, dilation=2)
            loss = tf.reduce_sum(y)
        return tape.gradient(loss, [x, w])

    graph = gradient.get_concrete_function(x, w).graph
    return {node.op for node in graph.as_graph_def().node} | {
        node.op for function in graph.as_graph_def().library.function
        for node in function.node_def}


def test_gradient_path_per_device(monkeypatch):
    assert "SpaceToBatchND" in _gradient_ops("/CPU:0")
    native = _gradient_ops("/GPU:0")  # traced only: nothing runs on the missing GPU
    assert "SpaceToBatchND" not in native and "Conv2DBackpropFilter" in native
    assert "SpaceToBatchND" in _gradient_ops()  # unpinned on this CPU-only machine
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda kind=None: ["/device:GPU:0"] if kind == "GPU" else [])
    assert "SpaceToBatchND" not in _gradient_ops()  # unpinned where a GPU is visible


@pytest.mark.parametrize("rate, pad", [(2, 2), (4, 4), (3, 5), (2, 0)])
def test_native_and_cpu_gradients_agree(rate, pad):
    """XLA differentiates dilated convolutions natively on a CPU too: both paths run there."""
    rng = np.random.default_rng(rate)
    x = tf.constant(rng.normal(size=(2, 11, 9, 5)), tf.float32)
    w = tf.constant(rng.normal(size=(3, 3, 5, 4)), tf.float32)

    def gradients(conv):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = conv(x, w)
            loss = tf.reduce_sum(y * tf.cos(y))
        return [y] + tape.gradient(loss, [x, w])

    cpu = gradients(lambda x, w: layers.conv2d(x, w, pad=pad, dilation=rate))
    native = tf.function(lambda: gradients(lambda x, w: tf.nn.conv2d(
        x, w, 1, [[0, 0], [pad, pad], [pad, pad], [0, 0]], dilations=rate)), jit_compile=True)()
    for ours, reference in zip(cpu, native):
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5,
                                   atol=1e-5 * np.abs(reference.numpy()).max())


# -- synchronised BatchNorm ----------------------------------------------------------------

class _TwoEqualReplicas:
    """A replica context of two replicas holding the same batch; counts its all-reduces."""
    num_replicas_in_sync = 2

    def __init__(self):
        self.calls = 0

    def all_reduce(self, op, value):
        self.calls += 1
        return tf.nest.map_structure(lambda v: 2 * v, value)


def _two_pass_moments(x):
    """The former synchronised statistics: mean first, then squares around it (two passes)."""
    mean = tf.reduce_sum(x, axis=[0, 1, 2]) / tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
    return mean, tf.reduce_mean(tf.square(x - mean), axis=[0, 1, 2])


@pytest.mark.parametrize("shift", [None, "moving"])
def test_synchronised_moments_take_one_all_reduce_and_match_two_passes(monkeypatch, shift):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(3.0, 2.0, (2, 17, 19, 8)) * rng.uniform(0.1, 4, 8), tf.float32)
    context = _TwoEqualReplicas()
    monkeypatch.setattr(tf.distribute, "get_replica_context", lambda: context)
    moving = tf.reduce_mean(x, axis=[0, 1, 2]) + 0.1 if shift else None
    mean, variance, count = layers.batch_moments(x, shift=moving)
    assert context.calls == 1
    # Two equal replicas: the global batch's statistics are this batch's.
    reference_mean, reference_variance = _two_pass_moments(x)
    np.testing.assert_allclose(mean.numpy(), reference_mean.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(variance.numpy(), reference_variance.numpy(), rtol=1e-5)
    assert float(count) == 2 * 17 * 19 * 2


# -- the commands: devices named first, TF32 off unless --tf32 ------------------------------

@pytest.fixture(scope="module")
def checkpoint_and_image(tmp_path_factory):
    from PIL import Image

    from conftest import save_model, tiny_model
    folder = tmp_path_factory.mktemp("devices")
    image = folder / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (33, 41, 3), np.uint8)).save(image)
    return str(save_model(tiny_model(3, seed=1), folder / "model")), str(image)


def _command(main, argv, capsys):
    from deeplab_resnet import cli
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv)
    out, _ = capsys.readouterr()
    assert exit_info.value.code == 0
    return out


@pytest.mark.parametrize("tf32", [False, True])
def test_prediction_commands_run_true_float32_unless_told(checkpoint_and_image, tmp_path,
                                                          capsys, tf32_restored, tf32):
    from deeplab_resnet.cli import evaluate, export, inference
    ckpt, image = checkpoint_and_image
    flag = ["--tf32"] if tf32 else []
    devices.use_tf32(not tf32)
    out = _command(inference.main, [image, ckpt, "--save-dir", str(tmp_path / "out")] + flag,
                   capsys)
    assert out.splitlines()[0].startswith("devices: CPU (no GPU visible")
    assert devices.tf32_enabled() == tf32
    listing = tmp_path / "list.txt"
    listing.write_text(f"{image}\n")
    for main, argv in ((evaluate.main, ["--data-list", str(listing), "--restore-from", ckpt,
                                        "--save-dir", str(tmp_path / "eval")]),
                       (export.main, ["--restore-from", ckpt, "--output-dir",
                                      str(tmp_path / "saved")])):
        devices.use_tf32(not tf32)
        out = _command(main, argv + flag, capsys)
        assert out.startswith("devices: CPU") and devices.tf32_enabled() == tf32


def test_training_runs_true_float32_and_names_its_devices(tmp_path, capsys, tf32_restored):
    from deeplab_resnet.data import shapes
    from deeplab_resnet.cli import train
    data = shapes.make_shapes_dataset(tmp_path / "data", num_train=2, num_val=1, size=(40, 40))
    argv = ["--model", "tiny", "--num-classes", "4", "--data-dir", data["root"],
            "--data-list", data["train"], "--input-size", "33,33", "--batch-size", "1",
            "--num-steps", "1", "--snapshot-dir", str(tmp_path / "snap"), "--memory-growth"]
    devices.use_tf32(True)
    out = _command(train.main, argv, capsys)
    assert out.startswith("devices: CPU (no GPU visible") and not devices.tf32_enabled()
    _command(train.main, argv + ["--num-steps", "2", "--tf32"], capsys)
    assert devices.tf32_enabled()
