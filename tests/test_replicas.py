"""Two replicas on a CPU split in two (DEEPLAB_LOGICAL_CPUS=2): `--strategy mirrored` training
(train.py with --grad-update-every 2, train_msc.py, synchronised BatchNorm, bf16, fp16 with loss
scaling) makes the update of one device with the same global batch; evaluation, inference and
prediction on the split CPU give the one-device results.

Every run under the split CPU happens in one subprocess (tests/replica_runs.py: the CPU is split
before TensorFlow sets up its devices, which this process has done); the one-device runs happen
here.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import process_state_kept
from deeplab_resnet import cli, training
from deeplab_resnet.cli import evaluate, inference, train_flags
from deeplab_resnet.data import shapes
from deeplab_resnet.data.images import read_image
from deeplab_resnet.model.network import DeepLabResNet
from deeplab_resnet.predict import prediction
from deeplab_resnet.runtime import devices, precision
from deeplab_resnet.weights import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 7
REPLICAS = 2
# case: (recipe, extra arguments)
CASES = {
    "train_grad_update_every_2": ("train", ["--grad-update-every", "2"]),
    "train_msc": ("train_msc", ["--grad-update-every", "2", "--scales", "1.0,0.5"]),
    "synchronised_bn": ("train", ["--is-training", "--bn-momentum", "0.9"]),
    "bf16": ("train", ["--precision", "bf16", "--is-training", "--bn-momentum", "0.9"]),
    "fp16": ("train", ["--precision", "fp16", "--is-training", "--bn-momentum", "0.9"]),
}
# bf16 and fp16 round each replica's gradients to their 8 or 11 bits before the sum over
# replicas: their updates are compared as a whole, ||ours - one device|| / ||one device||
# per tensor (as tests/caffe_training.py compares with Caffe), float32's element by element.
# Measured, over three runs of two updates, up to 0.107 (bf16) and 0.064 (fp16, emulated on
# this CPU), a different tensor each run; a replica's share lost or counted twice would be 0.5
# or more. The float32 cases above check the cross-replica arithmetic itself, to 1e-4.
TOLERANCE = {"bf16": 0.25, "fp16": 0.15}


def train_args(data, snapshot_dir, batch_size, case, strategy):
    _, extra = CASES[case]
    return ["--model", "tiny", "--num-classes", str(len(shapes.CLASSES)),
            "--data-dir", data["root"], "--data-list", data["train"], "--input-size", "40,40",
            "--batch-size", str(batch_size), "--snapshot-dir", str(snapshot_dir),
            "--random-seed", str(SEED), "--random-scale", "--random-mirror",
            "--learning-rate", "1e-4", "--num-steps", "2", "--save-pred-every", "2",
            "--save-num-images", "1", "--log-every", "2", "--strategy", strategy, *extra]


def predict_args(data, ckpt, out):
    evaluation = ["--data-dir", data["root"], "--data-list", data["val"], "--restore-from",
                  ckpt, "--json-output", str(out / "scores.json")]
    image = os.path.join(data["root"], open(data["val"]).readline().split()[0].lstrip("/"))
    return evaluation, [image, ckpt, "--save-dir", str(out / "inference")], image


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8,
                                      num_val=2, seed=5)


@pytest.fixture(scope="module")
def split(data, tmp_path_factory):
    """The subprocess's runs: {case: checkpoint} trained with --strategy mirrored on two
    replicas of batch 1, the evaluation and inference outputs, the per-replica predictions."""
    out = tmp_path_factory.mktemp("split")
    trained = {case: out / case / "model.ckpt-2" for case in CASES}
    ckpt = str(trained["synchronised_bn"])
    evaluation, inference_args, image = predict_args(data, ckpt, out)
    images = [image, os.path.join(data["root"], open(data["val"]).readlines()[1].split()[0]
                                  .lstrip("/"))]
    spec = {"out": str(out),
            "train": [[case, CASES[case][0], train_args(data, out / case, 1, case, "mirrored")]
                      for case in CASES],
            "evaluate": evaluation, "inference": inference_args, "predict": [ckpt, images]}
    env = dict(os.environ, DEEPLAB_LOGICAL_CPUS=str(REPLICAS), CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "replica_runs.py"),
                             json.dumps(spec)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "replicas.json").read_text())
    return dict(report, out=out, trained=trained, ckpt=ckpt, images=images, stdout=result.stdout)


def one_device(data, tmp_path, case):
    recipe, _ = CASES[case]
    with process_state_kept():
        assert train_flags.main(training.RECIPES[recipe], train_args(
            data, tmp_path / case, REPLICAS, case, "default")) == 0
    return str(tmp_path / case / "model.ckpt-2")


def assert_same_update(case, mirrored, single):
    """The weights' changes from the start agree (the weights themselves barely move)."""
    start = DeepLabResNet("tiny", len(shapes.CLASSES), seed=SEED).params
    ours, theirs = checkpoint.read_params(mirrored), checkpoint.read_params(single)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        delta, expected = ours[key] - start[key].numpy(), value - start[key].numpy()
        if case in TOLERANCE:
            error = np.linalg.norm(delta - expected) / max(np.linalg.norm(expected), 1e-30)
            assert error <= TOLERANCE[case], f"{case}: {key}: {error:.2e}"
            continue
        resolution = 4 * np.spacing(np.abs(value).max().astype(np.float32))
        np.testing.assert_allclose(delta, expected, rtol=1e-4,
                                   atol=max(1e-4 * np.abs(expected).max(), resolution),
                                   err_msg=f"{case}: {key}")
    assert np.abs(theirs["fc1_voc12_c0/weights"] - start["fc1_voc12_c0/weights"]).max() > 0


def test_the_split_cpu_has_two_replicas(split):
    assert split["replicas"] == REPLICAS
    assert "2 logical CPU devices (DEEPLAB_LOGICAL_CPUS)" in split["stdout"]


@pytest.mark.parametrize("case", sorted(set(CASES) - {"bf16", "fp16"}))
def test_mirrored_training_equals_one_device_with_the_global_batch(split, data, tmp_path, case):
    assert_same_update(case, split["trained"][case], one_device(data, tmp_path, case))


def test_bf16_mirrored_training_equals_one_device(split, data, tmp_path):
    if not split["bf16_native"]:
        pytest.skip("this CPU has no bf16 arithmetic: bf16 runs as fp32 (tested above)")
    assert_same_update("bf16", split["trained"]["bf16"], one_device(data, tmp_path, "bf16"))


def test_fp16_loss_scaling_on_replicas_equals_one_device(split, data, tmp_path, monkeypatch):
    """Said to have float16 arithmetic (this CPU has not: TensorFlow emulates it), both runs
    scale the loss: the same update and the same loss scale."""
    monkeypatch.setattr(precision, "detect",
                        lambda: precision.Hardware(frozenset({"avx512_fp16"})))
    single = one_device(data, tmp_path, "fp16")
    assert_same_update("fp16", split["trained"]["fp16"], single)
    scales = [tf.train.load_checkpoint(str(path)).get_tensor(
        "loss_scale/scale/.ATTRIBUTES/VARIABLE_VALUE") for path in (split["trained"]["fp16"],
                                                                   single)]
    assert scales[0] == scales[1]


def test_evaluation_and_inference_on_the_split_cpu_equal_one_device(split, data, tmp_path,
                                                                    capsys):
    evaluation, inference_args, image = predict_args(data, split["ckpt"], tmp_path)
    with process_state_kept():
        for command, argv in ((evaluate.main, evaluation), (inference.main, inference_args)):
            with pytest.raises(SystemExit) as exit_info:
                cli.run(command, argv)
            assert not exit_info.value.code
    capsys.readouterr()
    scores = [json.loads((folder / "scores.json").read_text())
              for folder in (split["out"], tmp_path)]
    assert scores[0]["confusion_matrix"] == scores[1]["confusion_matrix"]
    assert scores[0]["mean_iou"] == scores[1]["mean_iou"]
    stem = os.path.splitext(os.path.basename(image))[0] + "_mask.png"
    masks = [(folder / "inference" / stem).read_bytes() for folder in (split["out"], tmp_path)]
    assert masks[0] == masks[1]


def test_each_replica_predicts_what_one_device_predicts(split):
    model = checkpoint.load_weights(split["ckpt"])
    predictor = prediction.make_predictor(model, prediction.PredictConfig())
    with np.load(split["predicted"], allow_pickle=False) as saved:
        on_replicas = [saved[name] for name in saved.files]
    assert len(on_replicas) == REPLICAS
    for path, labels in zip(split["images"], on_replicas):
        np.testing.assert_array_equal(labels, predictor.labels(read_image(path)).numpy())


def test_logical_cpus_setting_is_checked(monkeypatch):
    monkeypatch.setenv(devices.LOGICAL_CPUS_ENV, "two")
    with pytest.raises(devices.SettingError, match="DEEPLAB_LOGICAL_CPUS must be a positive"):
        devices.use_logical_cpus()
    tf.config.list_logical_devices()  # this process has set up its devices
    monkeypatch.setenv(devices.LOGICAL_CPUS_ENV, "3")
    with pytest.raises(devices.SettingError, match="already set up 1 CPU device"):
        devices.use_logical_cpus()
    monkeypatch.setenv(devices.LOGICAL_CPUS_ENV, "")
    assert devices.use_logical_cpus() is None
