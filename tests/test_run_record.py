"""One --snapshot-dir, one run: the run record, what may change on a resume, the first lines
of output, fine_tune.py's random-backbone guard, and the README's real path run as written.

The commands run in-process; where only a run's start is tested (it gets past a refusal, its
first lines), the run is stopped before its first update (`started`)."""

import json
import os
import re
import shlex
import shutil

import pytest
import tensorflow as tf
from conftest import run_command, save_model


from deeplab_resnet import cli, training
from deeplab_resnet.data import shapes
from deeplab_resnet.cli import train_flags
from deeplab_resnet.cli.reporting import reporting
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.model.network import DeepLabResNet
from deeplab_resnet.training import run_record

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = len(shapes.CLASSES)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=4,
                                      num_val=2, size=(40, 48), seed=1)


def tiny(data, snapshot_dir, *extra):
    return ["--model", "tiny", "--num-classes", str(CLASSES), "--data-dir", data["root"],
            "--data-list", data["train"], "--input-size", "32,32", "--batch-size", "1",
            "--num-steps", "1", "--save-num-images", "0", "--snapshot-dir", str(snapshot_dir),
            *map(str, extra)]


def command(recipe, args):
    """A training command in-process, its log shown as the command shows it."""
    with reporting(name_of=cli.flag_name):
        return train_flags.main(recipe, args)


def started(recipe, args):
    """The run the command's flags `args` make, started and stopped at its first update
    boundary (a stop already requested: no update, nothing saved); its log shown as the
    command shows it. Returns the `TrainResult`."""
    config = train_flags.config_from_args(train_flags.build_parser(recipe).parse_args(args))
    stop = training.StopRequest()
    stop.request("only the start is tested")
    with reporting(name_of=cli.flag_name):
        result = training.train(config, recipe, stop=stop)
    assert result.stopped_early
    return result


@pytest.fixture(scope="module")
def one_update(data, tmp_path_factory):
    """A folder holding train.py's run `tiny(data, folder)` after its one update."""
    folder = tmp_path_factory.mktemp("one_update")
    config = training.TrainConfig(data_dir=data["root"], data_list=data["train"],
                                  variant="tiny", num_classes=CLASSES, input_size=(32, 32),
                                  batch_size=1, num_steps=1, save_num_images=0,
                                  snapshot_dir=str(folder))
    # The command's flags make the same config.
    parsed = train_flags.build_parser(training.TRAIN).parse_args(tiny(data, folder))
    assert train_flags.config_from_args(parsed) == config
    assert training.train(config).updates == 1
    return folder


def copy_run(one_update, snapshots):
    """`one_update` copied to `snapshots` (the checkpoint state file holds relative names)."""
    shutil.copytree(one_update, snapshots)
    return snapshots


def saved_record(folder):
    record, step = run_record.read(tf.train.latest_checkpoint(str(folder)))
    return record, step


def test_the_record_says_what_the_run_is(data, tmp_path, capsys):
    snapshots = tmp_path / "snap"
    assert command(training.TRAIN, tiny(data, snapshots, "--random-mirror")) == 0
    lines = capsys.readouterr().out.splitlines()
    # The first lines: devices, then weights, model and data, batch and updates, checkpoints.
    assert lines.pop(0).startswith("devices: ")
    assert lines[0] == ("train.py: weights: random initialisation — no --restore-from given; "
                        "BatchNorm is frozen on random statistics, which rarely trains (the "
                        "loss usually diverges): add --is-training to train it")
    assert lines[1] == (f"train.py: model: tiny, {CLASSES} classes (given); data: 4 images "
                        f"({data['train']})")
    assert lines[2].startswith("train.py: batch: 1 per replica x 1 replica x 1 mini-batch "
                               "= 1 image per update; updates: 0 done of 1")
    assert lines[3].startswith(f"train.py: checkpoints: {snapshots} ")
    record, step = saved_record(snapshots)
    assert step == 1
    assert record["script"] == "train.py" and record["model"] == "tiny"
    assert record["num_classes"] == CLASSES and record["images"] == 4
    assert record["global_batch"] == 1 and record["micro_batches"] == 1
    assert record["input_size"] == [32, 32] and record["random_mirror"] is True
    assert record["learning_rate"] == 2.5e-4 and record["num_steps"] == 1
    assert record["restore_from"] is None
    assert len(record["list_sha256"]) == 64


def test_another_run_in_the_folder_is_refused_with_the_ways_out(data, one_update, tmp_path,
                                                                capfd):
    """train.py then train_msc.py in one folder: one line, exit 2, nothing done."""
    snapshots = copy_run(one_update, tmp_path / "snap")
    latest = tf.train.latest_checkpoint(str(snapshots))
    status, _, err = run_command(lambda argv: train_flags.main(training.TRAIN_MSC, argv),
                                 tiny(data, snapshots, "--grad-update-every", 1), capfd)
    assert status == 2
    assert err.strip().splitlines() == [
        f"error: --snapshot-dir {snapshots} holds another run (train.py, update 1 of 1, tiny, "
        f"{CLASSES} classes; script train.py there, train_msc.py here): to start this run, give "
        f"a new --snapshot-dir, e.g. --snapshot-dir {snapshots}_2; to start it from that run's "
        f"weights: --snapshot-dir {snapshots}_2 --restore-from {latest}"]
    assert tf.train.latest_checkpoint(str(snapshots)) == latest

    # A new class count names the folder and the flag, not a file the user never named.
    with pytest.raises(DeepLabError, match=rf"--snapshot-dir {snapshots} holds another run .*"
                                        rf"--num-classes {CLASSES} there, 7 here"):
        train_flags.main(training.TRAIN, tiny(data, snapshots)[2:] + ["--num-classes", "7"])

    # The second way out: a new run from the snapshot's weights, without its optimizer state
    # (what its record then says: the README's real path below).
    msc = tmp_path / "msc"
    result = started(training.TRAIN_MSC, tiny(data, msc, "--grad-update-every", 1,
                                              "--restore-from", latest))
    assert (result.updates, result.checkpoint) == (0, None) and msc.is_dir()


def ways_out(message):
    """The flags each way out of a refusal says to give, as argument lists."""
    ways = message.rsplit("): ", 1)[1].split("; ")
    return [shlex.split(re.split(r"e\.g\. |: ", way)[-1]) for way in ways]


def follow(args, flags):
    """`args` with each '--flag value' of `flags` given: replaced where present, else added."""
    args = list(args)
    for flag, value in zip(flags[::2], flags[1::2]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def check_every_way_out(recipe, args, refusal, tmp_path):
    """Each way out `refusal` names, followed as it reads (from `tmp_path`, on a fresh copy of
    the state), gets past it: a new run starts in the new folder."""
    ways = ways_out(str(refusal.value))
    assert ways and all(way[0] == "--snapshot-dir" for way in ways), ways
    for way in ways:
        result = started(recipe, follow(args, way))
        assert (result.updates, result.checkpoint) == (0, None), way  # a new run
        assert (tmp_path / way[1]).is_dir(), way
        shutil.rmtree(tmp_path / way[1])
    return ways


def test_the_ways_out_of_a_refusal_lead_out(data, one_update, tmp_path, monkeypatch):
    """Issue 18: --restore-from a checkpoint of the refused folder itself; another setting; a
    checkpoint of another kind of training: every way offered, followed literally, works."""
    monkeypatch.chdir(tmp_path)
    copy_run(one_update, tmp_path / "snapshots")
    args = tiny(data, "snapshots/") + ["--restore-from", "snapshots/model.ckpt-1"]
    with pytest.raises(DeepLabError, match="holds another run") as refusal:
        train_flags.main(training.TRAIN, args)
    # Its weights are already asked for: the one way out is a new folder.
    assert check_every_way_out(training.TRAIN, args, refusal, tmp_path) == [
        ["--snapshot-dir", "snapshots_2"]]

    args = tiny(data, "snapshots/", "--learning-rate", 0.1)
    with pytest.raises(DeepLabError, match="holds another run") as refusal:
        train_flags.main(training.TRAIN, args)
    assert check_every_way_out(training.TRAIN, args, refusal, tmp_path) == [
        ["--snapshot-dir", "snapshots_2"],
        ["--snapshot-dir", "snapshots_2", "--restore-from", "snapshots/model.ckpt-1"]]

    key = run_record.KEY
    monkeypatch.setattr(run_record, "KEY", "no/such/key")  # as written before records
    # fp16 (a loss scale in the checkpoint) where the CPU has it; elsewhere it falls back to fp32.
    from deeplab_resnet.runtime import precision
    monkeypatch.setattr(precision, "detect",
                        lambda: precision.Hardware(frozenset({"avx512_fp16"})))
    args = tiny(data, "snapshots/", "--mixed-precision", "fp16")
    with pytest.raises(DeepLabError, match="written by another kind of training") as refusal:
        train_flags.main(training.TRAIN, args)
    monkeypatch.setattr(run_record, "KEY", key)
    assert len(check_every_way_out(training.TRAIN, args, refusal, tmp_path)) == 2


@pytest.mark.parametrize("change, allowed", [
    (["--num-steps", 2], True),
    (["--save-pred-every", 5, "--keep-checkpoints", 2, "--stop-after", 1, "--jit"], True),
    (["--learning-rate", 0.1], False),
    (["--batch-size", 2], False),
    (["--random-scale"], False),
    (["--restore-from", "elsewhere"], False),
])
def test_what_may_change_on_a_resume(data, one_update, tmp_path, capsys, change, allowed):
    snapshots = copy_run(one_update, tmp_path / "snap")
    if allowed:
        assert command(training.TRAIN, tiny(data, snapshots, *change)) == 0
        record, step = saved_record(snapshots)
        expected = 2 if "--num-steps" in change else 1
        assert step == expected and record["num_steps"] == expected
        if "--num-steps" in change:  # told (a note: stdout) once the first update worked
            assert ("--num-steps 1 -> 2: the learning-rate schedule now ends at update 2"
                    in capsys.readouterr().out)
    else:
        flag = str(change[0])
        label = "global batch" if flag == "--batch-size" else flag
        with pytest.raises(DeepLabError, match=re.escape(label)):
            train_flags.main(training.TRAIN, tiny(data, snapshots, *change))


def test_changed_list_contents_are_another_run(data, tmp_path):
    snapshots = tmp_path / "snap"
    listed = tmp_path / "train.txt"
    lines = open(data["train"]).read().splitlines()
    listed.write_text("\n".join(lines) + "\n")
    args = tiny(data, snapshots) + ["--data-list", str(listed)]
    assert train_flags.main(training.TRAIN, args) == 0
    listed.write_text("\n".join(reversed(lines)) + "\n")
    with pytest.raises(DeepLabError, match="--data-list contents"):
        train_flags.main(training.TRAIN, args)
    listed.write_text("  \n".join(lines) + "\n\n")  # spacing only: the same entries
    assert started(training.TRAIN, args + ["--num-steps", "2"]).updates == 1  # resumed


def test_checkpoints_without_a_record_resume_with_a_warning(data, one_update, tmp_path, capsys,
                                                            monkeypatch):
    snapshots = copy_run(one_update, tmp_path / "snap")
    monkeypatch.setattr(run_record, "KEY", "no/such/key")  # as written before records
    capsys.readouterr()
    with pytest.raises(DeepLabError, match=rf"--num-classes {CLASSES} there, 7 here"):
        train_flags.main(training.TRAIN, tiny(data, snapshots)[2:] + ["--num-classes", "7"])
    assert command(training.TRAIN, tiny(data, snapshots, "--num-steps", 2)) == 0
    out, err = capsys.readouterr()
    assert "was written before run records: cannot check that it is train.py's run" in err
    assert "resuming from" in out


def test_a_failed_resume_shows_only_its_error(tmp_path, capsys):
    """A changed total is told after the first update: a resume that fails before it (here a
    label file broken since) prints one line on stderr, its error."""
    data = shapes.make_shapes_dataset(tmp_path / "data", num_train=2, num_val=1, size=(40, 48),
                                      seed=3)
    snapshots = tmp_path / "snap"
    assert train_flags.main(training.TRAIN, tiny(data, snapshots)) == 0
    for label in (tmp_path / "data" / "SegmentationClass").iterdir():
        label.write_text("not a PNG")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda argv: train_flags.main(training.TRAIN, argv),
                tiny(data, snapshots, "--num-steps", 3))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "SegmentationClass" in err[0]


def test_the_head_class_count_says_where_it_came_from(data, one_update, tmp_path, capsys):
    """--not-restore-last without --num-classes: a head of the default 21 classes, said so."""
    latest = tf.train.latest_checkpoint(str(one_update))
    without_classes = tiny(data, tmp_path / "new")[4:]  # no --model, no --num-classes
    assert started(training.TRAIN, without_classes + [
        "--restore-from", latest, "--not-restore-last", "--is-training"]).updates == 0
    out = capsys.readouterr().out
    assert ("train.py: model: tiny, 21 classes (the default 21: give --num-classes for your "
            "data's count); data: 4 images") in out
    assert f"train.py: weights: {latest}; new head (fc1_voc12_*) with 21 classes" in out
    assert started(training.TRAIN, tiny(data, tmp_path / "again")[4:] + [
        "--restore-from", latest, "--is-training"]).updates == 0
    assert f"tiny, {CLASSES} classes (the starting weights')" in capsys.readouterr().out


def test_fine_tune_refuses_a_random_backbone_unless_asked(data, tmp_path, capsys):
    snapshots = tmp_path / "ft"
    with pytest.raises(DeepLabError, match="without --restore-from the backbone would be random.*"
                                        "--from-scratch"):
        train_flags.main(training.FINE_TUNE, tiny(data, snapshots))
    assert tf.train.latest_checkpoint(str(snapshots)) is None
    assert command(training.FINE_TUNE, tiny(data, snapshots, "--from-scratch")) == 0
    assert "random initialisation" in capsys.readouterr().out
    # Resuming needs neither flag.
    assert started(training.FINE_TUNE, tiny(data, snapshots, "--num-steps", 2)).updates == 1


def readme_real_path():
    """The training commands of the README's "real path" block, as argument lists."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = text.split("## The real path, start to finish", 1)[1].split("```bash", 1)[1]
    block = block.split("```", 1)[0].replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    return [(c[1], c[2:]) for c in commands
            if c[0] == "python" and c[1] in ("train.py", "train_msc.py", "fine_tune.py")]


def test_the_readme_real_path_runs_as_written(data, tmp_path, monkeypatch):
    """Its training commands in order, in one folder with the default snapshot folders, on
    tiny data: each starts its own run from the weights the README names (train_msc.py's
    only starts: its multi-scale update is test_train_msc.py's; fine_tune.py starts from
    train.py's checkpoint)."""
    monkeypatch.chdir(tmp_path)
    init = DeepLabResNet("tiny", 21, seed=5)  # stands in for init.caffemodel
    init_prefix = save_model(init, tmp_path / "init" / "tiny")
    recipes = {"train.py": training.TRAIN, "train_msc.py": training.TRAIN_MSC,
               "fine_tune.py": training.FINE_TUNE}
    commands = readme_real_path()
    assert [script for script, _ in commands] == ["train.py", "train_msc.py", "fine_tune.py"]
    substitutes = {"VOCdevkit/VOC2012": data["root"], "dataset/train.txt": data["train"],
                   "init.caffemodel": init_prefix}
    for script, args in commands:
        args = [substitutes.get(a, a) for a in args]
        small = ["--input-size", "32,32", "--batch-size", "1", "--num-steps", "1",
                 "--save-num-images", "0"]
        if script == "train_msc.py":
            small += ["--grad-update-every", "1"]
            assert started(recipes[script], args + small).updates == 0
            assert (tmp_path / "snapshots_msc").is_dir()
        else:
            assert train_flags.main(recipes[script], args + small) == 0, script
    for folder, script in (("snapshots", "train.py"), ("snapshots_finetune", "fine_tune.py")):
        record, step = saved_record(tmp_path / folder)
        assert (record["script"], step) == (script, 1)
    record, _ = saved_record(tmp_path / "snapshots_finetune")
    assert record["restore_from"] == str(tmp_path / "snapshots")
    assert json.loads(json.dumps(record)) == record


def test_the_global_batch_counts_not_its_layout(tmp_path):
    """--strategy may change the replicas as long as the global batch stays (the same maths)."""
    listed = tmp_path / "list.txt"
    listed.write_text("/a.jpg /a.png\n")

    def record(batch, replicas, micro=1, **settings):
        return run_record.new("train.py", str(listed), None, 1, batch, replicas, micro,
                              dict({"num_steps": 10, "model": None}, **settings))

    saved = dict(record(10, 1), model="tiny")
    assert run_record.differences(saved, record(5, 2)) == []
    assert run_record.differences(saved, record(10, 1, num_steps=20)) == []
    # Settings are named by their config field as `{field}`: the command line shows its
    # flags there.
    assert run_record.differences(saved, record(5, 1)) == [
        "global batch ({batch_size} x replicas) 10 there, 5 here"]
    assert run_record.differences(saved, record(10, 1, micro=2)) == [
        "{grad_update_every} 1 there, 2 here"]
    assert run_record.differences(saved, record(10, 1, model="resnet50")) == [
        "{variant} tiny there, resnet50 here"]
