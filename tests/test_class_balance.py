"""Class imbalance: --class-weights auto|FILE (median-frequency balancing recorded in the run
record, a resume uses the same weights) and --ohem-fraction F (the hardest F of the valid
pixels of each global batch, the same selection on two replicas as on one device)."""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import ROOT, run_command, trained_bn_config
from deeplab_resnet import training
from deeplab_resnet.cli import train as train_command
from deeplab_resnet.data import shapes
from deeplab_resnet.errors import SettingError
from deeplab_resnet.model import geometry
from deeplab_resnet.model.network import DeepLabResNet
from deeplab_resnet.training import class_weights, losses, run_record
from deeplab_resnet.weights import checkpoint

CLASSES = len(shapes.CLASSES)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=8,
                                      num_val=2, seed=3)


def batch(seed, size=4, height=33, width=41, ignore_share=0.2):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (size, 5, 6, CLASSES)).astype(np.float32)
    labels = rng.integers(0, CLASSES, (size, height, width)).astype(np.int32)
    labels[rng.random(labels.shape) < ignore_share] = 255
    return logits, labels


def numpy_terms(logits, labels):
    """(per-pixel cross-entropy, label) of the valid pixels, labels shrunk as DeepLab does."""
    shrunk = geometry.shrink_labels(tf.constant(labels), logits.shape[1:3]).numpy()
    valid = shrunk != 255
    shifted = logits - logits.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, np.where(valid, shrunk, 0)[..., None], -1)[..., 0]
    return -picked[valid], shrunk[valid]


def objective_loss(logits, labels, **settings):
    """The loss `Objective` computes for these logits (a model that returns them)."""
    objective = losses.Objective(lambda images, training: tf.constant(logits), 255, **settings)
    return float(objective(tf.zeros((len(logits), 8, 8, 3)), tf.constant(labels))[0])


def test_class_weights_make_the_weighted_mean():
    logits, labels = batch(0)
    weights = (0.5, 2.0, 1.0, 3.0)
    ce, label = numpy_terms(logits, labels)
    w = np.asarray(weights)[label]
    assert objective_loss(logits, labels, class_weights=weights) == \
        pytest.approx(float((w * ce).sum() / w.sum()), rel=1e-5)
    assert objective_loss(logits, labels, class_weights=(1.0,) * CLASSES) == \
        pytest.approx(objective_loss(logits, labels), rel=1e-6)


@pytest.mark.parametrize("fraction", [0.1, 0.37, 1.0])
def test_ohem_counts_only_the_hardest_fraction(fraction):
    logits, labels = batch(1)
    ce, _ = numpy_terms(logits, labels)
    k = max(1, int(np.ceil(fraction * ce.size)))
    hardest = np.sort(ce)[::-1][:k]
    assert objective_loss(logits, labels, ohem_fraction=fraction) == \
        pytest.approx(float(hardest.mean()), rel=1e-5)


def test_ohem_compiles_with_xla():
    """--jit: the number of pixels kept is not known when the step is compiled."""
    logits, labels = batch(3)
    objective = losses.Objective(lambda images, training: tf.constant(logits), 255,
                                 ohem_fraction=0.3, class_weights=(1.0, 2.0, 0.5, 1.0))
    compiled = tf.function(lambda images, labels: objective(images, labels)[0], jit_compile=True)
    images = tf.zeros((len(logits), 8, 8, 3))
    assert float(compiled(images, tf.constant(labels))) == pytest.approx(
        float(objective(images, tf.constant(labels))[0]), rel=1e-5)


def test_ohem_with_class_weights_weights_the_hardest_pixels():
    logits, labels = batch(2)
    weights = (1.0, 0.25, 4.0, 2.0)
    ce, label = numpy_terms(logits, labels)
    keep = ce >= np.sort(ce)[::-1][int(np.ceil(0.5 * ce.size)) - 1]
    w = np.asarray(weights)[label] * keep
    assert objective_loss(logits, labels, class_weights=weights, ohem_fraction=0.5) == \
        pytest.approx(float((w * ce).sum() / w.sum()), rel=1e-5)


# Two logical CPU devices need a process of their own (devices are set before TensorFlow starts).
TWO_REPLICAS = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from deeplab_resnet.model.network import DeepLabResNet
from deeplab_resnet.training import losses
settings = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
images = rng.normal(0, 50, (4, 33, 33, 3)).astype(np.float32)
labels = rng.integers(0, 4, (4, 33, 33)).astype(np.int32)
labels[:, :10] = 255
model = DeepLabResNet("tiny", 4, seed=1)
head = [v for k, v in model.params.items() if k.endswith("/biases")]
objective = losses.Objective(model, 255, **settings)
def loss_and_gradients(images, labels):
    with tf.GradientTape() as tape:
        loss = objective(images, labels, training=False)[0]
    return loss, tape.gradient(loss, head)
one = loss_and_gradients(tf.constant(images), tf.constant(labels))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
def replica(ctx):
    i = ctx.replica_id_in_sync_group
    part = slice(2 * i, 2 * i + 2)
    loss, grads = loss_and_gradients(tf.constant(images)[part], tf.constant(labels)[part])
    return ctx.all_reduce("sum", loss), ctx.all_reduce("sum", grads)
results = strategy.run(tf.function(lambda: replica(tf.distribute.get_replica_context())))
two = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], results)
print(json.dumps({"one": [float(one[0])] + [g.numpy().tolist() for g in one[1]],
                  "two": [float(two[0])] + [g.numpy().tolist() for g in two[1]]}))
"""


@pytest.mark.parametrize("settings", [{"ohem_fraction": 0.3},
                                      {"ohem_fraction": 0.6, "class_weights": [0.5, 1, 2, 4]}])
def test_two_replicas_weight_and_select_as_one_device(settings):
    result = subprocess.run([sys.executable, "-c", TWO_REPLICAS, json.dumps(settings)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["two"][0] == pytest.approx(out["one"][0], rel=1e-5)
    for two, one in zip(out["two"][1:], out["one"][1:]):
        np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-7)


def write_labels(folder, arrays):
    """A list of image/label pairs holding these label arrays; returns the list's path."""
    os.makedirs(folder, exist_ok=True)
    lines = []
    for i, array in enumerate(arrays):
        Image.fromarray(np.zeros(array.shape + (3,), np.uint8)).save(f"{folder}/{i}.jpg")
        Image.fromarray(array.astype(np.uint8)).save(f"{folder}/{i}.png")
        lines.append(f"{folder}/{i}.jpg {folder}/{i}.png")
    path = f"{folder}/list.txt"
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_median_frequency_by_hand(tmp_path):
    a = np.zeros((4, 5), np.uint8)
    a[0, :2] = 1
    a[3, 4] = 255
    b = np.full((2, 5), 2, np.uint8)
    b[0, 0] = 0
    data_list = write_labels(str(tmp_path), [a, b])
    pixels, present_in = class_weights.pixel_counts(None, data_list, 4, 255)
    assert pixels.tolist() == [18, 2, 9, 0] and present_in.tolist() == [30, 20, 10, 0]
    frequency = np.array([18 / 30, 2 / 20, 9 / 10])
    median = np.median(frequency)
    weights = class_weights.median_frequency(pixels, present_in)
    np.testing.assert_allclose(weights, [*(median / frequency), 1.0])


def test_large_lists_say_how_far_the_count_is(tmp_path, monkeypatch, caplog):
    data_list = write_labels(str(tmp_path), [np.zeros((3, 3), np.uint8)] * 3)
    monkeypatch.setattr(class_weights, "LARGE_LIST", 3)
    monkeypatch.setattr(class_weights, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="deeplab_resnet"):
        class_weights.pixel_counts(None, data_list, 2, 255)
    lines = [r.getMessage() for r in caplog.records if getattr(r, "progress", False)]
    assert lines[0] == f"class weights: counting the classes of 3 labels ({data_list})"
    assert "class weights: 3/3 labels counted" in lines


def test_auto_weights_are_recorded_and_a_resume_does_not_count_again(data, tmp_path,
                                                                      monkeypatch):
    config = trained_bn_config(data, tmp_path / "snap", num_steps=4, save_pred_every=2,
                               class_weights="auto", ohem_fraction=0.5)
    first = training.train(trained_bn_config(data, tmp_path / "snap", num_steps=4,
                                             save_pred_every=2, class_weights="auto",
                                             ohem_fraction=0.5, stop_after=2))
    record, _ = run_record.read(first.checkpoint)
    counted = class_weights.median_frequency(*class_weights.pixel_counts(
        data["root"], data["train"], CLASSES, 255))
    assert record["class_weights"] == "auto" and record["ohem_fraction"] == 0.5
    assert record["class_weights_computed"] == pytest.approx(counted)

    def no_count(*args, **kwargs):
        raise AssertionError("a resumed run counted the labels again")
    monkeypatch.setattr(class_weights, "pixel_counts", no_count)
    assert training.train(config).updates == 4
    final, _ = run_record.read(checkpoint.latest_in(str(tmp_path / "snap")))
    assert final["class_weights_computed"] == record["class_weights_computed"]
    with pytest.raises(SettingError, match="holds another run") as info:
        training.train(dataclasses.replace(config, class_weights=None, num_steps=6))
    assert info.value.field == "snapshot_dir"


def test_weights_file_is_read_and_recorded(data, tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("# background is common\n0.5\n\n1\n2  # rare\n1.5\n")
    config = trained_bn_config(data, tmp_path / "snap", num_steps=1, class_weights=str(path))
    result = training.train(config)
    record, _ = run_record.read(result.checkpoint)
    assert record["class_weights"] == [0.5, 1.0, 2.0, 1.5]


@pytest.mark.parametrize("content, message", [
    ("1\n2\n3\n", "{weights}: 3 weights, but the model has 4 classes"),
    ("1\nmany\n", "{weights}: line 2: expected one class weight (a number), got 'many'"),
    ("1\n-2\n1\n1\n", "{weights}: line 2: a class weight must be a number >= 0, got '-2'"),
])
def test_bad_weights_file_is_one_line_and_leaves_nothing(data, tmp_path, capfd, content,
                                                          message):
    path = tmp_path / "weights.txt"
    path.write_text(content)
    snap = tmp_path / "snap"
    status, _, err = run_command(train_command.main, [
        "--model", "tiny", "--num-classes", CLASSES, "--data-dir", data["root"],
        "--data-list", data["train"], "--snapshot-dir", snap,
        "--class-weights", path], capfd)
    assert status == 2
    assert err.count("\n") == 1 and message.format(weights=path) in err, err
    assert not snap.exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--ohem-fraction", "0", "argument --ohem-fraction: expected a number in (0, 1], got '0'"),
    ("--ohem-fraction", "1.5", "expected a number in (0, 1], got '1.5'"),
    ("--class-weights", "missing.txt", "--class-weights missing.txt: no such file"),
])
def test_bad_loss_flags_are_one_line(data, tmp_path, capfd, flag, value, message):
    snap = tmp_path / "snap"
    status, _, err = run_command(train_command.main, [
        "--model", "tiny", "--num-classes", CLASSES, "--data-dir", data["root"],
        "--data-list", data["train"], "--snapshot-dir", snap, flag, value], capfd)
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert not snap.exists()


@pytest.mark.parametrize("settings, field", [
    ({"ohem_fraction": 0}, "ohem_fraction"), ({"ohem_fraction": 1.01}, "ohem_fraction"),
    ({"ohem_fraction": True}, "ohem_fraction"), ({"class_weights": (1, -1)}, "class_weights"),
    ({"class_weights": (0, 0)}, "class_weights"), ({"class_weights": 3}, "class_weights"),
    ({"val_every": 0}, "val_every"), ({"val_every": 5}, "val_every"),
    ({"val_list": "v.txt", "val_pad_size": 0}, "val_pad_size"),
    ({"val_list": "v.txt", "val_scales": ()}, "val_scales"),
])
def test_config_fields_are_checked_naming_the_field(settings, field):
    with pytest.raises(SettingError) as info:
        training.TrainConfig(**settings)
    assert info.value.field == field and field in str(info.value)


def test_default_loss_is_untouched_by_the_new_settings():
    """No class weights and no OHEM: `Objective` takes Caffe's path, the same numbers as
    `cross_entropy_sums` (the golden tests of test_caffe_training.py check it against Caffe)."""
    logits, labels = batch(4)
    total, _, count = losses.cross_entropy_sums(tf.constant(logits), tf.constant(labels), 255)
    assert objective_loss(logits, labels) == float(total / count)
    model = DeepLabResNet("tiny", CLASSES, seed=0)
    assert losses.Objective(model, 255).class_weights is None
