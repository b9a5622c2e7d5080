"""The training loop: Caffe SGD, losses, learning, exact resume after kill -9, NaN stop,
ImageNet starting points, fine-tuning, command-line errors."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tensorflow as tf

from conftest import run_command
from deeplab_resnet.data.images import read_image
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.lists import read_list
from deeplab_resnet import cli, training
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.model import geometry
from deeplab_resnet.data import shapes
from deeplab_resnet.model.arch import is_head_variable
from deeplab_resnet.cli import train as train_command
from deeplab_resnet.errors import SettingError
from deeplab_resnet.model.network import DeepLabResNet, preprocess
from deeplab_resnet.training import losses, optim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), seed=0)


def tiny_args(data, snapshot_dir, *extra):
    return ["--model", "tiny", "--num-classes", str(len(shapes.CLASSES)),
            "--data-dir", data["root"], "--data-list", data["train"], "--input-size", "32,32",
            "--batch-size", "2", "--snapshot-dir", str(snapshot_dir), "--save-num-images", "1",
            *map(str, extra)]


def tiny_config(data, snapshot_dir, recipe=training.TRAIN, **settings):
    """The config of `tiny_args` (with the recipe's defaults), for training through the API."""
    return recipe.config(**{"variant": "tiny", "num_classes": len(shapes.CLASSES),
                            "data_dir": data["root"], "data_list": data["train"],
                            "input_size": (32, 32), "batch_size": 2,
                            "snapshot_dir": str(snapshot_dir), "save_num_images": 1,
                            **settings})


def run_script(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def checkpoint_tensors(prefix):
    """Every saved tensor except the save counter."""
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not k.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def summary_tags(folder):
    """Tags of the TensorBoard events written in `folder`."""
    tags = set()
    for name in os.listdir(folder):
        if name.startswith("events.out.tfevents"):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
                tags.update(value.tag for value in event.summary.value)
    return tags


# -- optimizer and loss against hand computation -----------------------------------------------


def test_caffe_sgd_matches_hand_computation():
    w0 = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
    b0 = np.array([0.25, -1.0], np.float32)
    w, b = tf.Variable(w0), tf.Variable(b0)
    sgd = optim.CaffeSGD({"fc1_voc12_c0/weights": (w, 10.0, 1.0),
                          "fc1_voc12_c0/biases": (b, 20.0, 0.0)}, momentum=0.9,
                         weight_decay=0.01)
    gw = [np.array([[0.1, 0.2], [0.3, 0.4]], np.float32), np.array([[1, 0], [0, -1]], np.float32)]
    gb = [np.array([0.5, -0.5], np.float32), np.array([0.1, 0.1], np.float32)]
    rates = [0.1, 0.05]  # the rate changes between the steps: it sits inside the velocity
    vw, vb, ew, eb = np.zeros_like(w0), np.zeros_like(b0), w0.copy(), b0.copy()
    for lr, g1, g2 in zip(rates, gw, gb):
        sgd.apply([("fc1_voc12_c0/weights", tf.constant(g1), w),
                   ("fc1_voc12_c0/biases", tf.constant(g2), b)], tf.constant(lr))
        vw = 0.9 * vw + lr * 10.0 * (g1 + 0.01 * ew)
        vb = 0.9 * vb + lr * 20.0 * g2  # no decay on biases
        ew, eb = ew - vw, eb - vb
    np.testing.assert_allclose(w.numpy(), ew, rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), eb, rtol=1e-6)
    np.testing.assert_allclose(sgd.velocity["fc1_voc12_c0/weights"].numpy(), vw, rtol=1e-6)


def test_adam_matches_hand_computation():
    w = tf.Variable([1.0, -1.0])
    adam = optim.Adam({"x": w})
    m = v = np.zeros(2)
    expected = np.array([1.0, -1.0])
    for t, g in enumerate([np.array([0.5, 2.0]), np.array([-1.0, 0.1])], start=1):
        adam.apply([("x", tf.constant(g, tf.float32), w)], tf.constant(0.1))
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        rate = 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        expected = expected - rate * m / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5)


def test_lr_multipliers_and_decay_groups():
    params = optim.sgd_params(DeepLabResNet("tiny", 3))
    assert params["conv1/weights"][1:] == (1.0, 1.0)
    assert params["res5a_branch2b/weights"][1:] == (1.0, 1.0)
    assert params["fc1_voc12_c2/weights"][1:] == (10.0, 1.0)
    assert params["fc1_voc12_c2/biases"][1:] == (20.0, 0.0)
    assert not any(k.startswith("bn") for k in params)  # frozen BatchNorm
    trained_bn = optim.sgd_params(DeepLabResNet("tiny", 3, train_bn=True))
    assert trained_bn["bn_conv1/scale"][1:] == (1.0, 0.0)
    assert "bn_conv1/mean" not in trained_bn


def test_poly_learning_rate():
    assert optim.poly_learning_rate(2.5e-4, 0, 20000, 0.9) == 2.5e-4
    assert optim.poly_learning_rate(1.0, 5000, 20000, 0.9) == pytest.approx(0.75 ** 0.9)
    assert optim.poly_learning_rate(1.0, 20000, 20000, 0.9) == 0.0


def test_cross_entropy_ignores_label_and_shrinks_labels_like_deeplab():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 2, 2, 3)).astype(np.float32)
    # Logit (i, j) takes label pixel (3i, 3j): the corners (TF's nearest would take (1, 1)...).
    labels = np.array([[[0, 9, 9, 2], [9, 9, 9, 9], [9, 9, 9, 9], [1, 9, 9, 255]]], np.int32)
    total, correct, count = losses.cross_entropy_sums(tf.constant(logits), tf.constant(labels), 255)
    loss = total / count
    small = np.array([[0, 2], [1, 255]])
    log_p = logits[0] - np.log(np.exp(logits[0]).sum(-1, keepdims=True))
    picked = [-log_p[y, x, small[y, x]] for y, x in ((0, 0), (0, 1), (1, 0))]
    assert float(count) == 3
    assert float(loss) == pytest.approx(np.mean(picked), rel=1e-5)
    hits = sum(np.argmax(logits[0, y, x]) == small[y, x] for y, x in ((0, 0), (0, 1), (1, 0)))
    assert float(correct) == hits


# -- end to end --------------------------------------------------------------------------------


def mean_iou(model, data):
    """mIoU of `model` on the shapes validation list, full resolution (numpy confusion)."""
    n = len(shapes.CLASSES)
    confusion = np.zeros((n, n), np.int64)
    images, labels = read_list(data["root"], data["val"])
    for image_path, label_path in zip(images, labels):
        label = read_label(label_path)
        logits = model(preprocess(read_image(image_path)[None]))
        pred = np.argmax(geometry.logits_to_image(logits, label.shape).numpy()[0], -1)
        valid = label != 255
        confusion += np.bincount(n * label[valid].astype(int) + pred[valid],
                                 minlength=n * n).reshape(n, n)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    iou = np.diag(confusion) / np.maximum(union, 1)
    return float(iou.mean())


def test_tiny_model_learns_shapes(data, tmp_path):
    snapshots = tmp_path / "snap"
    config = tiny_config(data, snapshots, input_size=(64, 64), batch_size=8, num_steps=50,
                         save_pred_every=25, learning_rate=0.02, train_bn=True,
                         bn_momentum=0.9, random_scale=True, random_mirror=True)
    assert training.train(config).updates == 50
    model = checkpoint.load_weights(snapshots)
    # Chance (uniform guesses) is about 0.15; predicting background everywhere about 0.2.
    # These settings reached 0.76 to 0.88 over seven random seeds (this one: 0.88).
    assert mean_iou(model, data) > 0.6
    assert summary_tags(snapshots) == {"loss", "learning_rate", "pixel_accuracy",
                                       "image_label_prediction"}
    assert tf.train.latest_checkpoint(str(snapshots)).endswith("model.ckpt-50")


def test_resume_after_kill_is_exact(data, tmp_path, capfd, process_state_restored):
    """A command killed with SIGKILL, then run again: the same weights as one run (here the
    API's). Only the killed run is a process: it must die mid-run."""
    settings = dict(num_steps=30, save_pred_every=3, learning_rate=0.003, train_bn=True,
                    bn_momentum=0.9, random_scale=True, random_mirror=True, deterministic=True)
    assert training.train(tiny_config(data, tmp_path / "ref", **settings)).updates == 30

    argv = tiny_args(data, tmp_path / "killed", "--num-steps", 30, "--save-pred-every", 3,
                     "--learning-rate", 0.003, "--is-training", "--bn-momentum", 0.9,
                     "--random-scale", "--random-mirror", "--deterministic")
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *argv],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "checkpoint"
    deadline = time.time() + 120
    while not (state.exists() and "model.ckpt-" in state.read_text()) and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = tf.train.latest_checkpoint(str(tmp_path / "killed"))
    assert killed_at is not None and int(killed_at.rsplit("-", 1)[1]) < 30, killed_at

    status, out, err = run_command(train_command.main, argv, capfd)
    assert status == 0, err
    assert "resuming from" in out
    final = checkpoint_tensors(str(tmp_path / "killed" / "model.ckpt-30"))
    expected = checkpoint_tensors(str(tmp_path / "ref" / "model.ckpt-30"))
    assert sorted(final) == sorted(expected)
    assert any("velocity" in k for k in final) and any("data_position" in k for k in final)
    for key, value in expected.items():
        np.testing.assert_array_equal(final[key], value, err_msg=key)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path):
    snapshots = tmp_path / "snap"
    config = tiny_config(data, snapshots, num_steps=50, save_pred_every=1, learning_rate=1e4)
    with pytest.raises(SettingError, match="loss became .* at update") as error:
        training.train(config)
    assert error.value.field == "learning_rate"
    # Frozen BatchNorm on the statistics of a new model: the message names both ways out.
    assert ("BatchNorm is frozen on random statistics, which rarely trains (the loss usually "
            "diverges): add --is-training to train it; or a lower --learning-rate"
            in error.value.naming(cli.flag_name))
    latest = tf.train.latest_checkpoint(str(snapshots))
    assert latest is not None  # the first update still had a finite loss
    assert all(np.isfinite(v).all() for v in checkpoint.read_params(latest).values())


def test_random_batchnorm_statistics_are_recognised():
    """New statistics (mean 0, variance 1; Caffe's unseen blobs: variance 0) versus estimated."""
    from deeplab_resnet.training.loop import has_initial_statistics
    model = DeepLabResNet("tiny", 4)
    assert has_initial_statistics(model)
    variances = [v for k, v in model.params.items() if k.endswith("/variance")]
    variances[0].assign(tf.zeros_like(variances[0]))
    assert has_initial_statistics(model)
    variances[1].assign(tf.fill(variances[1].shape, 0.5))
    assert not has_initial_statistics(model)
    model = DeepLabResNet("tiny", 4)
    means = [v for k, v in model.params.items() if k.endswith("/mean")]
    means[-1].assign(tf.fill(means[-1].shape, 0.1))
    assert not has_initial_statistics(model)


def test_a_head_of_another_class_count_names_not_restore_last(tmp_path):
    params = {k: v.numpy() for k, v in DeepLabResNet("tiny", 21).params.items()}
    prefix = checkpoint.save_params(params, tmp_path / "voc", "tiny", 21)
    config = training.TrainConfig(variant="tiny", num_classes=4, restore_from=prefix)
    with pytest.raises(SettingError, match="has 21 classes") as error:
        training.build_model(config, None)
    assert error.value.field == "num_classes"
    assert ("; add --not-restore-last to train a new head with 4 classes on its backbone"
            in error.value.naming(cli.flag_name))
    model = training.build_model(dataclasses.replace(config, new_head=True), None)
    assert model.num_classes == 4


def test_imagenet_checkpoint_starts_the_backbone(tmp_path):
    """An ImageNet ResNet-50 checkpoint (conv1 bias, fc1000, no head) with --not-restore-last."""
    rng = np.random.default_rng(0)
    reference = DeepLabResNet("resnet50", 21)
    params = {k: rng.normal(size=v.shape).astype(np.float32)
              for k, v in reference.params.items() if not is_head_variable(k)}
    params["conv1/biases"] = rng.normal(size=64).astype(np.float32)
    params["fc1000/weights"] = rng.normal(size=(2048, 1000)).astype(np.float32)
    params["fc1000/biases"] = np.zeros(1000, np.float32)
    prefix = checkpoint.save_params(params, tmp_path / "imagenet" / "resnet50")
    config = training.TrainConfig(variant="resnet50", num_classes=5, restore_from=prefix,
                                  new_head=True)
    model = training.build_model(config, None)
    for name, var in model.params.items():
        if is_head_variable(name):
            continue
        expected = params[name]
        if name == "bn_conv1/mean":  # the conv1 bias is folded into the BatchNorm mean
            expected = expected - params["conv1/biases"]
        np.testing.assert_array_equal(var.numpy(), expected, err_msg=name)
    assert tuple(model.params["fc1_voc12_c0/weights"].shape) == (3, 3, 2048, 5)
    with pytest.raises(SettingError, match="add new_head") as error:
        training.build_model(training.TrainConfig(variant="resnet50", restore_from=prefix), None)
    assert "add --not-restore-last" in error.value.naming(cli.flag_name)


def test_converted_imagenet_caffemodel_starts_the_backbone(tmp_path, resnet50_deploy_prototxt):
    """convert.py's output for KaimingHe's ResNet-50 deploy net lands tensor by tensor."""
    from caffe_fixtures import write_random_caffemodel
    from deeplab_resnet.weights.conversion import convert
    caffemodel = tmp_path / "resnet50.caffemodel"
    blobs = write_random_caffemodel(resnet50_deploy_prototxt, caffemodel, seed=2)
    prefix = tmp_path / "ckpt" / "resnet50"
    convert(resnet50_deploy_prototxt, caffemodel, ckpt_path=prefix)
    model = training.build_model(training.TrainConfig(variant="resnet50",
                                                      restore_from=str(prefix),
                                                      new_head=True), None)
    checked = 0
    for name, var in model.params.items():
        layer, kind = name.split("/")
        if is_head_variable(name):
            continue
        if kind == "weights":
            expected = blobs[layer][0].transpose(2, 3, 1, 0)  # Caffe OIHW -> HWIO
        elif kind in ("mean", "variance"):
            mean, var_, factor = blobs[layer]
            expected = (mean if kind == "mean" else var_) / factor[0]
            if name == "bn_conv1/mean":
                expected = expected - blobs["conv1"][1]
        else:
            gamma, beta = blobs["scale" + layer[len("bn"):]]
            expected = gamma if kind == "scale" else beta
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5, atol=1e-6, err_msg=name)
        checked += 1
    assert checked == sum(1 for k in model.params if not is_head_variable(k))


def test_fine_tune_trains_only_the_head_and_resumes(data, tmp_path):
    start = DeepLabResNet("tiny", len(shapes.CLASSES), seed=3)
    prefix = checkpoint.save_params({k: v.numpy() for k, v in start.params.items()},
                                    tmp_path / "start" / "tiny", "tiny", len(shapes.CLASSES))
    snapshots = tmp_path / "ft"
    config = tiny_config(data, snapshots, training.FINE_TUNE, restore_from=prefix, num_steps=4,
                         save_pred_every=10, learning_rate=0.01, grad_update_every=2)
    result = training.train(dataclasses.replace(config, stop_after=2), "fine_tune")
    assert (result.updates, result.stopped_early) == (2, False)
    assert result.checkpoint == tf.train.latest_checkpoint(str(snapshots))
    assert result.checkpoint.endswith("-2")
    assert training.train(config, "fine_tune").updates == 4
    saved = checkpoint_tensors(tf.train.latest_checkpoint(str(snapshots)))
    assert saved["step/.ATTRIBUTES/VARIABLE_VALUE"] == 4
    assert saved["optimizer/iterations/.ATTRIBUTES/VARIABLE_VALUE"] == 4
    assert saved["data_position/.ATTRIBUTES/VARIABLE_VALUE"] == 4 * 2 * 2
    tuned = checkpoint.read_params(snapshots)
    for name, var in start.params.items():
        changed = not np.array_equal(tuned[name], var.numpy())
        assert changed == is_head_variable(name), name


def test_cli_errors_are_one_line(data, tmp_path, capfd, process_state_restored):
    """train.py's one line in-process (its process: tests/test_faults.py); fine_tune.py's as
    a process, TensorFlow's start-up included."""
    bad_list = tmp_path / "bad.txt"
    bad_list.write_text("/JPEGImages/shape_0000.jpg /SegmentationClass/nope.png\n")
    status, _, err = run_command(train_command.main, [
        "--data-dir", data["root"], "--data-list", bad_list, "--snapshot-dir", tmp_path / "s"],
        capfd)
    assert status == 2
    assert err.strip().splitlines() == [
        f"error: {bad_list}:1: {data['root']}/SegmentationClass/nope.png: no such file"]
    assert not (tmp_path / "s").exists()
    result = run_script("fine_tune.py", "--batch-size", "0")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--batch-size" in result.stderr
