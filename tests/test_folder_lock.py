"""One run per snapshot folder (issue 26 item 1): a second training into a folder that a run
holds is refused before writing anything, naming the folder and the holder; a killed holder
frees it at once; evaluating from the folder stays allowed. The holder is a real second
process (the lock is the operating system's), the second run in-process."""

import os
import signal
import socket
import subprocess
import sys

import pytest

import conftest
from deeplab_resnet import training
from deeplab_resnet.cli import evaluate, train_flags
from deeplab_resnet.data import shapes
from deeplab_resnet.errors import SettingError
from deeplab_resnet.training import TrainConfig, folder_lock

HOLD = ("import sys\n"
        "from deeplab_resnet.training import folder_lock\n"
        "with folder_lock.holding(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n")


@pytest.fixture
def holder():
    """Starts processes that hold a folder's lock until they are told to end (or killed)."""
    started = []

    def start(folder):
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=conftest.ROOT,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   env=dict(os.environ, PYTHONPATH=str(conftest.ROOT)))
        assert process.stdout.readline().strip() == "held"
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=2,
                                      num_val=2, size=(40, 48), seed=3)


def tiny_args(data, snapshot_dir, steps=1):
    return ["--data-dir", data["root"], "--data-list", data["train"], "--model", "tiny",
            "--num-classes", str(len(shapes.CLASSES)), "--batch-size", "1", "--input-size",
            "32,32", "--num-steps", str(steps), "--save-num-images", "0",
            "--snapshot-dir", str(snapshot_dir)]


def tiny_config(data, snapshot_dir):
    return TrainConfig(data_dir=data["root"], data_list=data["train"], variant="tiny",
                       num_classes=len(shapes.CLASSES), batch_size=1, input_size=(32, 32),
                       num_steps=1, save_num_images=0, snapshot_dir=str(snapshot_dir))


def listing(folder):
    return sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())


def test_a_second_run_is_refused_naming_the_folder_and_the_holder(data, tmp_path, holder,
                                                                   capfd):
    out = tmp_path / "snap"
    process = holder(out)
    before = listing(out)
    with pytest.raises(SettingError) as refused:
        training.train(tiny_config(data, out))
    message = str(refused.value)
    assert refused.value.field == "snapshot_dir" and str(out) in message
    assert f"process {process.pid} on {socket.gethostname()}, started " in message
    # The command: exit 2, one line naming the flag, nothing written.
    status, stdout, stderr = conftest.run_command(
        lambda argv: train_flags.main(training.TRAIN, argv), tiny_args(data, out), capfd)
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1, stderr
    assert lines[0].startswith(f"error: --snapshot-dir {out}: in use by another training run "
                               f"(process {process.pid} on "), lines
    assert "give another --snapshot-dir" in lines[0]
    assert listing(out) == before


def test_a_killed_holder_frees_the_folder_at_once(data, tmp_path, holder):
    out = tmp_path / "snap"
    process = holder(out)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert (out / folder_lock.LOCK_NAME).exists()  # left by the killed run, but not locked
    result = training.train(tiny_config(data, out))
    assert result.updates == 1
    assert not (out / folder_lock.LOCK_NAME).exists()  # the run let go of it


def test_evaluating_from_a_folder_in_use_is_allowed(data, tmp_path, holder, capsys):
    out = tmp_path / "snap"
    training.train(tiny_config(data, out))
    holder(out)
    with pytest.raises(SystemExit) as done:
        from deeplab_resnet import cli
        cli.run(evaluate.main, ["--data-dir", data["root"], "--data-list", data["val"],
                                "--restore-from", str(out)])
    assert done.value.code == 0, capsys.readouterr().err
    assert "Mean IoU:" in capsys.readouterr().out


def test_the_lock_is_released_and_its_file_removed_however_the_block_ends(tmp_path):
    folder = tmp_path / "new" / "snap"
    with pytest.raises(KeyError):
        with folder_lock.holding(str(folder)):
            assert (folder / folder_lock.LOCK_NAME).exists()
            raise KeyError("boom")
    assert os.listdir(folder) == []
    with folder_lock.holding(str(folder)):  # free again
        pass
    with folder_lock.holding(str(folder), lock=False):  # a worker that is not the chief
        assert os.listdir(folder) == []


def test_a_holder_that_wrote_nothing_yet_is_still_named(tmp_path):
    with open(tmp_path / folder_lock.LOCK_NAME, "w") as file:
        assert folder_lock.holder_of(file.fileno()) == "a process that has not said who it is yet"
