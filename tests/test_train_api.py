"""Training from Python: `train` with a `TrainConfig`, callbacks, a `StopRequest`, resuming;
nothing printed, no process-wide state changed; one host read per update; the config's dict
round trip; --precision and its old name --mixed-precision; the commands' signal wiring."""

import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import ops, random_seed

import conftest
from caffe_training import logged_losses
from deeplab_resnet import training
from deeplab_resnet.data import shapes
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.cli import train_flags
from deeplab_resnet.errors import DeepLabError, SettingError
from deeplab_resnet.model.network import DeepLabResNet
from deeplab_resnet.training import (Callback, StopRequest, TrainConfig, TrainResult, losses,
                                     optim, run_record, step)

CLASSES = len(shapes.CLASSES)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=4,
                                      num_val=1, size=(40, 48), seed=2)


def tiny_config(data, snapshot_dir, **settings):
    return TrainConfig(**{"data_dir": data["root"], "data_list": data["train"],
                          "variant": "tiny", "num_classes": CLASSES, "batch_size": 1,
                          "input_size": (32, 32), "num_steps": 3, "save_pred_every": 100,
                          "save_num_images": 0, "learning_rate": 1e-3,
                          "snapshot_dir": str(snapshot_dir), **settings})


class HostReads:
    """Counts the copies of tensor values to the host (.numpy(), float(), bool(), ...) that
    the project's code makes on the main thread: the loop's, not the input pipeline's
    threads nor TensorFlow's own reads of host-side flags (the summary ops' `record_if`)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = ops._EagerTensorBase._numpy

        def counted(tensor):
            caller = sys._getframe(1)
            while caller.f_code.co_filename == ops.__file__:  # .numpy(), __float__, ...
                caller = caller.f_back
            if (threading.current_thread() is threading.main_thread()
                    and f"{os.sep}tensorflow{os.sep}" not in caller.f_code.co_filename):
                self.count += 1
            return original(tensor)

        monkeypatch.setattr(ops._EagerTensorBase, "_numpy", counted)


class Recorder(Callback):
    """Records what it is told (and the host reads so far); asks to stop at `stop_at`."""

    def __init__(self, stop=None, stop_at=None, reads=None):
        self.updates, self.checkpoints, self.reads, self.ends = [], [], [], []
        self.stop, self.stop_at, self.host_reads = stop, stop_at, reads

    def on_update(self, update, loss, learning_rate):
        self.updates.append((update, loss, learning_rate))
        if self.host_reads is not None:
            self.reads.append(self.host_reads.count)
        if update == self.stop_at:
            self.stop.request("enough")

    def on_checkpoint(self, update, path):
        self.checkpoints.append((update, path))

    def on_train_end(self):
        self.ends.append((len(self.updates), len(self.checkpoints)))


def process_state():
    """conftest's process state, and the global seed (the caller's, never reset)."""
    return {**conftest.process_state(), "seed": random_seed.get_seed(None)[0]}


@pytest.fixture
def callers_seed():
    """A global seed the caller set (99), restored afterwards."""
    previous = random_seed.get_seed(None)[0]
    tf.random.set_seed(99)
    yield 99
    tf.random.set_seed(previous)


def test_train_stop_resume_and_nothing_else(data, tmp_path, capsys, caplog, monkeypatch,
                                            callers_seed):
    """A stop asked by a callback, a resume to the end, a rerun with nothing to do: the
    results, the callbacks, the log; no output, no signal handler, umask or seed changed."""
    # TensorFlow's own Python warnings (e.g. a checkpoint deleted with values it did not
    # restore) would reach a notebook's stderr through TensorFlow's handler. Objects that
    # earlier tests of this worker left are collected first: their warnings are not this run's.
    gc.collect()
    caplog.set_level(logging.WARNING, logger="tensorflow")
    caplog.set_level(logging.INFO, logger="deeplab_resnet")
    before = process_state()
    assert before["seed"] == callers_seed
    snapshots = tmp_path / "snap"
    # Every update read back as it is made: the callbacks hear of each one before the next.
    config = tiny_config(data, snapshots, log_every=1)
    stop, reads = StopRequest(), HostReads(monkeypatch)
    first = Recorder(stop, stop_at=2, reads=reads)
    result = training.train(config, "train", callbacks=[first], stop=stop)
    assert result == TrainResult(str(snapshots / "model.ckpt-2"), 2, first.updates[-1][1],
                                 stopped_early=True, stop_reason="enough")
    assert [u for u, _, _ in first.updates] == [1, 2]
    assert all(np.isfinite(loss) and isinstance(loss, float) for _, loss, _ in first.updates)
    assert first.updates[0][2] == 1e-3  # the poly rate at update 0
    assert first.checkpoints == [(2, result.checkpoint)]
    assert first.ends == [(2, 1)]  # once, after the last checkpoint
    # One copy to the host per update (the stats of the update), none per micro-batch.
    assert first.reads[1] - first.reads[0] == 1

    second = Recorder()
    result = training.train(config, "train", callbacks=[second])
    assert (result.updates, result.stopped_early, result.stop_reason) == (3, False, None)
    assert result.checkpoint == str(snapshots / "model.ckpt-3")
    assert [u for u, _, _ in second.updates] == [3] and second.checkpoints[0][0] == 3

    assert second.ends == [(1, 1)]
    result = training.train(config, "train", callbacks=[second])
    assert result == TrainResult(str(snapshots / "model.ckpt-3"), 3, None)
    assert second.ends == [(1, 1), (1, 1)]  # nothing to do: called all the same

    gc.collect()  # TensorFlow warns about unrestored values when a checkpoint is collected
    assert capsys.readouterr() == ("", "")
    assert [r.getMessage() for r in caplog.records if r.name == "tensorflow"] == []
    report = [r.getMessage() for r in caplog.records
              if r.name != "tensorflow" and not getattr(r, "progress", False)]
    assert report[0] == ("train.py: weights: random initialisation — no restore_from given; "
                         "BatchNorm is frozen on random statistics, which rarely trains (the "
                         "loss usually diverges): add train_bn to train it")
    assert any(m.startswith("train.py: weights: resuming from") for m in report)
    progress = [r.getMessage() for r in caplog.records if getattr(r, "progress", False)]
    assert f"finished: {snapshots / 'model.ckpt-3'}" in progress
    assert any("already trained for 3 of num_steps 3" in m for m in progress)
    # TF32 off, as the commands compute without --tf32 (the one setting `train` changes).
    assert process_state() == dict(before, tf32=False)


def test_updates_are_read_back_every_log_every_updates(data, tmp_path, monkeypatch):
    """--log-every 3: one host read per 3 updates (the statistics of 3 updates at once, read
    while the next is dispatched), the callbacks and summaries of every update all the same."""
    snapshots = tmp_path / "snap"
    config = tiny_config(data, snapshots, num_steps=7, log_every=3, train_bn=True,
                         learning_rate=1e-4)
    reads = HostReads(monkeypatch)
    recorder = Recorder(reads=reads)
    training.train(config, "train", callbacks=[recorder])
    assert [u for u, _, _ in recorder.updates] == list(range(1, 8))
    first = recorder.reads[0]
    # Read after updates 4 and 7 are dispatched, then what is left before the checkpoint.
    assert recorder.reads == [first] * 3 + [first + 1] * 3 + [first + 2]
    losses = logged_losses(str(snapshots))
    assert losses == [loss for _, loss, _ in recorder.updates]


def test_a_loss_read_late_stops_the_run_as_one_read_at_once(data, tmp_path):
    """A diverging run (frozen random BatchNorm, a high rate) read back every 4 updates stops at
    the same update, with the same message and the same last checkpoint, as one read every
    update: nothing is saved after the update that went wrong."""
    errors, saved = [], []
    for log_every in (1, 4):
        snapshots = tmp_path / str(log_every)
        config = tiny_config(data, snapshots, num_steps=12, save_pred_every=2,
                             log_every=log_every)
        with pytest.raises(SettingError, match="loss became .* at update") as error:
            training.train(config, "train")
        errors.append(str(error.value).replace(str(snapshots), "SNAPSHOTS"))
        saved.append(checkpoint.read_params(tf.train.latest_checkpoint(str(snapshots))))
    assert errors[0] == errors[1] and "last checkpoint: SNAPSHOTS/model.ckpt-" in errors[0]
    for key, value in saved[0].items():
        np.testing.assert_array_equal(saved[1][key], value, err_msg=key)


def test_micro_batches_stay_on_the_device(monkeypatch):
    """train_msc's accumulated micro-batches: no host read until the update is read, once."""
    model = DeepLabResNet("tiny", 3, seed=1)
    params = optim.sgd_params(model)
    trainer = step.Trainer(losses.Objective(model, 255, (1.0, 0.5)),
                           optim.CaffeSGD(params), {k: p[0] for k, p in params.items()})
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(0, 40, (3, 1, 33, 33, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 3, (3, 1, 33, 33)), tf.int32)
    trainer.step(images, labels, 0.01).read()  # traced
    reads = HostReads(monkeypatch)
    stats = trainer.step(images, labels, 0.01)
    assert reads.count == 0 and all(tf.is_tensor(v) for v in stats[:3])
    values = stats.read()
    assert reads.count == 1
    assert values.ok is True and np.isfinite(values.loss) and 0 <= values.accuracy <= 1


def test_config_dict_round_trip():
    config = training.TRAIN_MSC.config(input_size=(65, 97), scales=(1.0, 0.5), variant="tiny",
                                       precision="bf16", stop_after=3, class_names=("a", "b"))
    settings = config.to_dict()
    assert settings["input_size"] == [65, 97] and settings["grad_update_every"] == 10
    assert settings["class_names"] == ["a", "b"]
    assert TrainConfig.from_dict(json.loads(json.dumps(settings))) == config
    assert TrainConfig.from_dict({"num_steps": 5}) == TrainConfig(num_steps=5)
    with pytest.raises(SettingError, match="not a training setting: mixed_precision"):
        TrainConfig.from_dict({"mixed_precision": "bf16"})


@pytest.mark.parametrize("settings, field", [
    ({"precision": "fp64"}, "precision"), ({"batch_size": 0}, "batch_size"),
    ({"variant": "resnet7"}, "variant"), ({"stop_after": 0}, "stop_after"),
    ({"learning_rate": -1.0}, "learning_rate"), ({"strategy": "tpu"}, "strategy"),
])
def test_bad_settings_name_their_field(data, tmp_path, settings, field):
    with pytest.raises(SettingError) as error:
        training.train(tiny_config(data, tmp_path / "s", **settings))
    assert error.value.field == field and str(error.value).startswith(field)
    assert not (tmp_path / "s").exists()
    with pytest.raises(SettingError, match="unknown training recipe 'msc'"):
        training.train(tiny_config(data, tmp_path / "s"), recipe="msc")


def test_class_names_are_kept_in_the_checkpoints(data, tmp_path):
    from deeplab_resnet.weights import checkpoint
    from deeplab_resnet.predict.segmenter import Segmenter
    names = tuple(shapes.CLASSES)
    parsed = train_flags.build_parser(training.TRAIN).parse_args(
        ["--class-names", ",".join(names)])
    assert train_flags.config_from_args(parsed).class_names == names
    config = tiny_config(data, tmp_path / "s", num_steps=1, class_names=names)
    result = training.train(config)
    assert checkpoint.describe(result.checkpoint).class_names == names
    assert Segmenter.load(result.checkpoint).class_names == list(names)
    # A resume keeps them without being told; other names are another run.
    result = training.train(dataclasses.replace(config, num_steps=2, class_names=None))
    assert result.updates == 2 and checkpoint.describe(result.checkpoint).class_names == names
    other = ("bg", *names[1:])
    with pytest.raises(SettingError, match="class_names background,square,disc,triangle there, "
                       "bg,square,disc,triangle here"):
        training.train(dataclasses.replace(config, num_steps=3, class_names=other))
    with pytest.raises(SettingError, match=r"class_names: 2 names for 4 classes") as error:
        training.train(tiny_config(data, tmp_path / "t", class_names=("a", "b")))
    assert error.value.field == "class_names"


def test_progress_lines_off_a_terminal():
    """A line once a minute passed (the clock is injected: 25 s per update), none at the end."""
    ticks = iter([0.0, 100.0] + [100.0 + 25 * i for i in range(1, 10)])
    lines = train_flags.ProgressLines("train.py", 10, 4, clock=lambda: next(ticks))
    shown = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_flags.progress, "write", shown.append)
        for update in range(1, 11):
            lines.on_update(update, 0.5 / update, 1e-3)
    # Update 1 (start-up and tracing) is left out of the rates: 1 update per 25 s from there.
    assert shown == ["train.py: update 4/10, loss 0.1250, learning rate 0.001, 0.16 images/s, "
                     "ETA 2.5 min",
                     "train.py: update 7/10, loss 0.0714, learning rate 0.001, 0.16 images/s, "
                     "ETA 1.2 min"]


def test_the_commands_show_progress_lines_when_stderr_is_not_a_terminal(monkeypatch, tmp_path):
    given = {}

    def fake_train(config, recipe, callbacks, stop, strategy):
        given["callbacks"] = callbacks
        return TrainResult(None, 0, None)

    monkeypatch.setattr(train_flags, "train", fake_train)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    args = ["--snapshot-dir", str(tmp_path / "s"), "--batch-size", "3",
            "--grad-update-every", "2"]
    assert train_flags.main(training.TRAIN, args) == 0
    [lines] = given["callbacks"]
    assert isinstance(lines, train_flags.ProgressLines) and lines.images == 6


def test_bad_data_is_a_typed_error(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("/a.jpg /a.png\n")
    with pytest.raises(DeepLabError, match="a.jpg"):
        training.train(TrainConfig(data_dir=str(tmp_path), data_list=str(listed),
                                   variant="tiny", snapshot_dir=str(tmp_path / "s")))


def test_precision_flag_and_its_old_name(capsys):
    parser = train_flags.build_parser(training.TRAIN)
    assert train_flags.config_from_args(parser.parse_args([])).precision == "fp32"
    assert capsys.readouterr().err == ""
    assert train_flags.config_from_args(
        parser.parse_args(["--precision", "bf16"])).precision == "bf16"
    for old, new in (("none", "fp32"), ("fp16", "fp16")):
        config = train_flags.config_from_args(parser.parse_args(["--mixed-precision", old]))
        assert config.precision == new
        assert capsys.readouterr().err == (f"warning: --mixed-precision is now --precision: "
                                           f"reading --mixed-precision {old} as --precision "
                                           f"{new}\n")
    for recipe in (training.TRAIN_MSC, training.FINE_TUNE):
        args = train_flags.build_parser(recipe).parse_args(["--precision", "fp16"])
        assert args.precision == "fp16"


def test_run_records_keep_the_mixed_precision_entry(tmp_path):
    """Records say `mixed_precision` ("none" for float32) as before, so old checkpoints
    resume; a difference names the `precision` field, shown as --precision by the CLI."""
    listed = tmp_path / "list.txt"
    listed.write_text("/a.jpg /a.png\n")

    def record(precision):
        settings = run_record.settings_of(TrainConfig(precision=precision), training.TRAIN)
        return run_record.new("train.py", str(listed), None, 1, 10, 1, 1, settings)

    written_before = dict(record("fp32"), model="tiny")
    assert written_before["mixed_precision"] == "none"
    assert run_record.differences(written_before, record("fp32")) == []
    assert run_record.differences(written_before, record("bf16")) == [
        "{precision} fp32 there, bf16 here"]


def test_signals_set_the_stop_request_and_are_restored():
    """The commands' wiring: the first SIGTERM asks to stop (name and number) and gives the
    signal back its previous handler; leaving restores both handlers."""
    previous = {s: signal.getsignal(s) for s in train_flags.SIGNALS}
    stop = StopRequest()
    with train_flags.stop_on_signals(stop):
        assert signal.getsignal(signal.SIGTERM) is not previous[signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)
        assert (stop.reason, stop.code) == ("SIGTERM", signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is previous[signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is not previous[signal.SIGINT]
    assert {s: signal.getsignal(s) for s in train_flags.SIGNALS} == previous
    stopped = train_flags.stopped(TrainResult("s/model.ckpt-7", 7, 0.5, True, "SIGTERM"), stop,
                                  TrainConfig(num_steps=9, snapshot_dir="s"))
    assert str(stopped) == ("SIGTERM: stopped after update 7 of 9, checkpoint saved in s; "
                            "rerun the same command to resume")
    assert stopped.exit_status == 143


def test_the_first_request_wins():
    stop = StopRequest()
    assert not stop.requested and stop.reason is None
    stop.request("first", code=2)
    stop.request("second", code=3)
    assert (stop.requested, stop.reason, stop.code) == (True, "first", 2)
