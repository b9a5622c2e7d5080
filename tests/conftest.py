"""Shared test fixtures: paths, the shared Caffe prototxt fixtures, small models.

Run from the repository root with `python -m pytest`, which puts the root (this
checkout's package) first on sys.path.
"""

import contextlib
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"


def shared_fixture(name):
    """Path of a file in ../shared/fixtures, or skip the test when it is absent."""
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def tiny_model(num_classes, seed=0, head_biases=None):
    """A `tiny` DeepLabResNet; `head_biases` (one per class) breaks ties between classes."""
    import numpy as np

    from deeplab_resnet.model.network import DeepLabResNet
    net = DeepLabResNet("tiny", num_classes, seed=seed)
    if head_biases is not None:
        for name, var in net.params.items():
            if name.endswith("/biases"):
                var.assign(np.asarray(head_biases, np.float32))
    return net


def with_trained_statistics(model, seed):
    """{name: array} of a model's weights, BatchNorm statistics and affine replaced by
    non-trivial values (what trained weights look like)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    out = {}
    for name, var in model.params.items():
        value = var.numpy()
        if name.endswith(("/mean", "/offset")):
            value = rng.normal(0, 0.1, value.shape).astype(np.float32)
        elif name.endswith(("/variance", "/scale")):
            value = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        out[name] = value
    return out


def trained_bn_config(data, snapshot_dir, **settings):
    """A train.py `TrainConfig` of the tiny net on a shapes dataset, BatchNorm trained (so that
    a few updates from random weights learn), small crops; `settings` change it."""
    from deeplab_resnet import training
    from deeplab_resnet.data import shapes
    return training.TRAIN.config(**{
        "variant": "tiny", "num_classes": len(shapes.CLASSES), "data_dir": data["root"],
        "data_list": data["train"], "input_size": (32, 32), "batch_size": 2,
        "snapshot_dir": str(snapshot_dir), "save_num_images": 0, "train_bn": True,
        "bn_momentum": 0.9, "learning_rate": 0.003, **settings})


def run_command(main, argv, capfd):
    """(exit status, stdout, stderr) of a command's `main` run in-process as its script runs
    it (`cli.run`). `capfd` captures the file descriptors, so TensorFlow's native log lines
    count as they would for the script; for tests where the process itself is not the point."""
    import tensorflow as tf

    from deeplab_resnet import cli
    # The script's first device lookup happens while TensorFlow loads quietly (`tf_quiet`);
    # here TensorFlow is loaded already: look them up before the capture (cuInit's line).
    tf.config.list_physical_devices()
    capfd.readouterr()
    try:
        cli.run(main, [str(a) for a in argv])
        status = 0
    except SystemExit as exc:
        status = cli.exit_status(exc)
    out, err = capfd.readouterr()
    return status, out, err


def save_model(model, prefix):
    """Writes a DeepLabResNet's weights, variant and class count as a checkpoint at `prefix`."""
    from deeplab_resnet.weights import checkpoint
    return checkpoint.save_params({k: v.numpy() for k, v in model.params.items()}, prefix,
                                  model.variant, model.num_classes)


@pytest.fixture
def deeplab_deploy_prototxt():
    return shared_fixture("deeplab_resnet101_deploy.prototxt")


@pytest.fixture
def resnet50_deploy_prototxt():
    return shared_fixture("resnet50_deploy.prototxt")


@pytest.fixture(scope="session")
def root():
    return ROOT


def process_state():
    """The process-wide settings an in-process command or training run could leave changed."""
    import signal

    from tensorflow.python.framework import config as tf_config

    from deeplab_resnet.runtime import devices
    umask = os.umask(0o022)  # read by setting it: Python has no getter
    os.umask(umask)
    return {"handlers": {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)},
            "umask": umask, "cwd": os.getcwd(), "tf32": devices.tf32_enabled(),
            "determinism": tf_config.is_op_determinism_enabled()}


@contextlib.contextmanager
def process_state_kept():
    """Puts back what in-process commands and runs set on purpose for the whole process (TF32:
    every command sets it from --tf32; op determinism: --deterministic), so that the tests after
    them run as in a fresh worker, and checks that nothing else of `process_state` changed: a
    command that changes more belongs in a subprocess."""
    from tensorflow.python.framework import config as tf_config

    from deeplab_resnet.runtime import devices
    before = process_state()
    yield
    devices.use_tf32(before["tf32"])
    if not before["determinism"]:
        tf_config.disable_op_determinism()
    assert process_state() == before


@pytest.fixture
def process_state_restored():
    """`process_state_kept` around the test."""
    with process_state_kept():
        yield
