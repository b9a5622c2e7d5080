"""Validation while training: evaluate.py's numbers on the chief, val/mean_iou in TensorBoard,
the best checkpoint in SNAPSHOT_DIR/best/ (never rotated away), and a resumed run that ends
with the same results as an uninterrupted one."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import process_state_kept, run_command, trained_bn_config
from deeplab_resnet import training
from deeplab_resnet.cli import evaluate
from deeplab_resnet.cli import train as train_command
from deeplab_resnet.data import shapes
from deeplab_resnet.errors import SettingError
from deeplab_resnet.training import validation

CLASSES = len(shapes.CLASSES)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=12,
                                      num_val=3, seed=4)


def config(data, snapshot_dir, **settings):
    return trained_bn_config(data, snapshot_dir, **{
        "num_steps": 6, "save_pred_every": 2, "val_list": data["val"], "deterministic": True,
        **settings})


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not k.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH", "meta/run"))}


def val_summaries(folder):
    """{update: value} of the val/mean_iou events in `folder`."""
    found = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith("events.out.tfevents"):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
                for value in event.summary.value:
                    if value.tag == "val/mean_iou":
                        found[event.step] = float(tf.make_ndarray(value.tensor))
    return found


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    snap = tmp_path_factory.mktemp("uninterrupted") / "snap"
    with process_state_kept():
        result = training.train(config(data, snap, keep_checkpoints=1))
    assert result.updates == 6
    return snap


def test_best_checkpoint_is_kept_apart_from_rotation(uninterrupted):
    history = read_json(uninterrupted / validation.HISTORY_FILE)["mean_iou"]
    assert sorted(history, key=int) == ["2", "4", "6"]
    best = read_json(uninterrupted / "best" / "best.json")
    assert set(best) == {"update", "mean_iou"}
    assert best["mean_iou"] == max(history.values())
    assert history[str(best["update"])] == best["mean_iou"]
    name = f"model.ckpt-{best['update']}"
    assert sorted(os.listdir(uninterrupted / "best")) == sorted(
        ["best.json", "checkpoint", f"{name}.index", f"{name}.data-00000-of-00001"])
    assert tf.train.latest_checkpoint(str(uninterrupted)).endswith("model.ckpt-6")
    if best["update"] != 6:  # rotated away from the snapshot folder, kept in best/
        assert not (uninterrupted / f"{name}.index").exists()
    summaries = val_summaries(uninterrupted)
    assert sorted(summaries) == [2, 4, 6]
    for update, value in summaries.items():
        assert value == pytest.approx(history[str(update)], rel=1e-6)


def test_scores_are_evaluate_py_numbers_on_the_best_checkpoint(data, uninterrupted, tmp_path,
                                                                capfd):
    best = read_json(uninterrupted / "best" / "best.json")
    report = tmp_path / "scores.json"
    status, out, err = run_command(evaluate.main, [
        "--data-dir", data["root"], "--data-list", data["val"],
        "--restore-from", uninterrupted / "best", "--json-output", report], capfd)
    assert status == 0, err
    assert read_json(report)["mean_iou"] == best["mean_iou"]
    assert out.splitlines()[-1] == f"Mean IoU: {best['mean_iou']:.4f}"


def test_protocol_settings_are_evaluate_py_flags(data, tmp_path, capfd, process_state_restored):
    snap = tmp_path / "snap"
    training.train(config(data, snap, num_steps=2, val_flip=True, val_scales=(1.0, 0.5),
                          val_deeplab_protocol=True, val_pad_size=49))
    score = read_json(snap / validation.HISTORY_FILE)["mean_iou"]["2"]
    report = tmp_path / "scores.json"
    status, _, err = run_command(evaluate.main, [
        "--data-dir", data["root"], "--data-list", data["val"], "--restore-from", snap / "best",
        "--flip", "--scales", "1.0,0.5", "--deeplab-protocol", "--pad-size", "49",
        "--json-output", report], capfd)
    assert status == 0, err
    assert read_json(report)["mean_iou"] == score


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("how", ["stop-after", "killed-before-scoring-4",
                                 "killed-before-scoring-6"])
def test_a_resumed_run_equals_an_uninterrupted_one(data, uninterrupted, tmp_path, monkeypatch,
                                                   how, process_state_restored):
    """Stopped by --stop-after; or killed after saving checkpoint 4 (or the last, 6) but
    before scoring it: the rerun scores it first (at 6: though there is nothing to train)."""
    snap = tmp_path / "snap"
    if how == "stop-after":
        assert training.train(config(data, snap, keep_checkpoints=1, stop_after=3)).updates == 3
    else:
        dies_at = int(how.rsplit("-", 1)[1])
        original = validation.Validation.run

        def dies(self, update, checkpoint, writer):
            if update == dies_at:
                raise Interrupted()
            return original(self, update, checkpoint, writer)
        monkeypatch.setattr(validation.Validation, "run", dies)
        with pytest.raises(Interrupted):
            training.train(config(data, snap, keep_checkpoints=1))
        monkeypatch.setattr(validation.Validation, "run", original)
        assert str(dies_at) not in read_json(snap / validation.HISTORY_FILE)["mean_iou"]
    assert training.train(config(data, snap, keep_checkpoints=1)).updates == 6
    for name in (validation.HISTORY_FILE, "best/best.json"):
        assert read_json(snap / name) == read_json(uninterrupted / name), name
    best = read_json(snap / "best" / "best.json")["update"]
    ours, theirs = (tensors(str(folder / "best" / f"model.ckpt-{best}"))
                    for folder in (snap, uninterrupted))
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


def test_val_every_adds_checkpoints_and_scores(data, tmp_path, process_state_restored):
    snap = tmp_path / "snap"
    training.train(config(data, snap, num_steps=5, save_pred_every=4, val_every=3))
    assert sorted(read_json(snap / validation.HISTORY_FILE)["mean_iou"], key=int) == ["3", "5"]
    saved = sorted(int(p.name.split("-")[1].split(".")[0]) for p in snap.glob("*.index"))
    assert saved == [3, 4, 5]


def test_bad_validation_settings(data, tmp_path, capfd):
    snap = tmp_path / "snap"
    base = ["--model", "tiny", "--num-classes", CLASSES, "--data-dir", data["root"],
            "--data-list", data["train"], "--snapshot-dir", snap]
    status, _, err = run_command(train_command.main, [*base, "--val-list", tmp_path / "no.txt"],
                                 capfd)
    assert status == 2 and err == f"error: --val-list {tmp_path / 'no.txt'}: no such file\n"
    status, _, err = run_command(train_command.main, [*base, "--val-every", "3"], capfd)
    assert status == 2 and err.count("\n") == 1 and "--val-every" in err \
        and "need --val-list" in err, err
    assert not snap.exists()
    with pytest.raises(SettingError) as info:
        training.train(config(data, snap, val_data_dir=str(tmp_path / "none")))
    assert info.value.field == "val_data_dir"


def test_the_command_shows_the_scores(data, tmp_path, capfd):
    snap = tmp_path / "snap"
    status, out, err = run_command(train_command.main, [
        "--model", "tiny", "--num-classes", CLASSES, "--data-dir", data["root"],
        "--data-list", data["train"], "--input-size", "32,32", "--batch-size", "2",
        "--is-training", "--num-steps", "2", "--save-num-images", "0", "--snapshot-dir", snap,
        "--val-list", data["val"], "--val-data-dir", data["root"], "--val-every", "1"], capfd)
    assert status == 0, err
    history = read_json(snap / validation.HISTORY_FILE)["mean_iou"]
    best = read_json(snap / "best" / "best.json")
    for update in (1, 2):
        line = (f"validation at update {update}: mean IoU {history[str(update)]:.4f} on 3 "
                "images (")
        assert line in out, out  # progress: stdout (issue 26)
    assert f"(the best so far, kept in {snap / 'best'})" in out
    assert best["mean_iou"] == max(history.values())
