"""Faults while a command runs, end to end: a loss that becomes nan, SIGKILL mid-save, SIGTERM
and SIGINT (one worker of several too), full disks and a corrupt snapshot to resume.

Each ends with a non-zero exit status and one line on stderr, `error: ...`, or with a clean
stop, and leaves the snapshot folder loadable. Real processes run only where the process is
the point (signals, SIGKILL, a file-size limit set on the process); the rest runs in-process
(`test_faults.command`). The inputs are those of `test_faults.env`.
"""

import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import process_state_kept
from test_distribute import free_ports, worker_env
import test_faults
from test_faults import TRAIN_TINY, arguments, flip_bit, run_script, script
import deeplab_resnet
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.cli import train_flags
from deeplab_resnet.training import TRAIN

# The fixtures of test_faults: its inputs (`env`) and its in-process runner (`command`).
env = test_faults.env
command = test_faults.command


def config_of(argv):
    """The `TrainConfig` train.py makes of `argv` (for runs made in-process through the API)."""
    return train_flags.config_from_args(train_flags.build_parser(TRAIN).parse_args(argv))


def test_nan_loss_is_one_line_error_and_no_bad_checkpoint(env, tmp_path, command):
    out = tmp_path / "out"
    result = command("train.py", arguments(env, out, TRAIN_TINY)
                     + ["--num-steps", "40", "--learning-rate", "1e9"])
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    # Progress lines may come first (stderr is not a terminal); one error line, last.
    assert [line for line in lines if line.startswith("error")] == lines[-1:], result.stderr
    assert lines[-1].startswith("error: loss became") and "--learning-rate" in lines[-1]
    latest = checkpoint.resolve(out) if any(out.glob("*.index")) else None
    if latest is not None:  # every checkpoint left behind holds finite weights
        assert all(np.isfinite(v).all() for v in checkpoint.read_params(latest).values())


# -- SIGKILL -----------------------------------------------------------------------------------


def saved_step(out):
    """The update of the checkpoint the state file of `out` names (0: none yet)."""
    state = out / "checkpoint"
    text = state.read_text() if state.exists() else ""
    return int(text.split("\n")[0].rsplit("-", 1)[1].strip('"')) if "ckpt-" in text else 0


def wait_for(condition, poll=0.001, timeout=120):
    """Polls `condition()` until it holds (or the timeout)."""
    deadline = time.time() + timeout
    while not condition() and time.time() < deadline:
        time.sleep(poll)


def in_a_save(out):
    """Whether a save is being written: TensorFlow's `_temp` folder of a checkpoint exists."""
    return any(name.endswith("_temp") for name in os.listdir(out))


def written_not_named(out):
    """Whether a checkpoint's files are written but the state file does not name it yet (or
    the older ones beyond --keep-checkpoints are still being removed)."""
    named = saved_step(out)
    return any(name.endswith(".index") and int(name.split("-")[-1][:-6]) > named
               for name in os.listdir(out))


def test_kill_during_checkpoint_saves_leaves_a_loadable_checkpoint(env, tmp_path):
    """SIGKILL in a run that saves after every update, while a checkpoint is written, then
    in its rerun between a checkpoint's files and the state file naming them: the latest
    checkpoint always loads, and the rerun resumes and saves further."""
    out = tmp_path / "out"
    command = [sys.executable, script("train.py"),
               *arguments(env, out, TRAIN_TINY + ["--num-steps", "100000"])]
    # A save takes a few milliseconds of an update's ~50-100: its moments are watched for
    # (every millisecond); a kill at a random moment would mostly land between saves.
    for watch in (in_a_save, written_not_named):
        start = saved_step(out)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   cwd=tmp_path)
        wait_for(lambda: saved_step(out) > start, poll=0.02)  # this run resumed and saved
        wait_for(lambda: watch(out), timeout=30)
        process.kill()
        process.wait()
        assert saved_step(out) > start
        model = checkpoint.load_weights(checkpoint.resolve(out))
        assert model.variant == "tiny"


# -- signals -----------------------------------------------------------------------------------

SIGNAL_RUN_STEPS = 60


def _signal_run_argv(env, out):
    """A deterministic tiny run that saves only at its end (or when stopped)."""
    return [*arguments(env, out, TRAIN_TINY), "--num-steps", str(SIGNAL_RUN_STEPS),
            "--save-pred-every", str(10 * SIGNAL_RUN_STEPS), "--deterministic",
            "--learning-rate", "1e-6"]  # the tiny random net diverges at the default rate


@pytest.fixture(scope="module")
def uninterrupted_weights(env, tmp_path_factory):
    """The final weights of the signal runs' settings trained in one go, in-process (the API),
    the process state kept (op determinism: the config's `deterministic`)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    with process_state_kept():
        result = deeplab_resnet.train(config_of(_signal_run_argv(env, out)))
    assert (result.updates, result.stopped_early) == (SIGNAL_RUN_STEPS, False)
    return checkpoint.read_params(result.checkpoint)


def _stop_with(signum, command, out, cwd):
    """Starts `command`, sends `signum` after its first update; returns the update it stopped at."""
    before = set(out.glob("events.*")) if out.exists() else set()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, cwd=cwd)
    # Each run writes a new event file after its first update.
    wait_for(lambda: out.exists() and set(out.glob("events.*")) - before, poll=0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    lines = stderr.strip().splitlines()
    assert process.returncode == 128 + signum, stderr
    # A resumed run says so first; then exactly one error line.
    assert [line for line in lines if line.startswith("error")] == lines[-1:], stderr
    assert lines[-1].startswith(f"error: {signum.name}: stopped after update"), stderr
    stopped = int(lines[-1].split("after update ")[1].split()[0])
    assert stopped < SIGNAL_RUN_STEPS, "the signal came too late to test anything"
    assert checkpoint.resolve(out).endswith(f"model.ckpt-{stopped}")
    assert not list(out.glob("*_temp*")) and not list(out.glob(".tmp*"))
    return stopped


def test_signals_save_at_update_boundary_and_rerun_resumes_exactly(env, tmp_path, command,
                                                                  uninterrupted_weights):
    """SIGTERM, then SIGINT on the resumed run (real processes: signals), then a rerun to the
    end (in-process): the final weights equal an uninterrupted run's, bit for bit."""
    out = tmp_path / "out"
    argv = _signal_run_argv(env, out)
    train_py = [sys.executable, script("train.py"), *argv]
    first = _stop_with(signal.SIGTERM, train_py, out, tmp_path)
    second = _stop_with(signal.SIGINT, train_py, out, tmp_path)
    assert 1 <= first < second
    rerun = command("train.py", argv)
    assert rerun.returncode == 0, rerun.stderr
    assert f"(update {second} of {SIGNAL_RUN_STEPS})" in rerun.stdout  # it resumed
    final = checkpoint.read_params(checkpoint.resolve(out))
    assert final.keys() == uninterrupted_weights.keys()
    for name, value in final.items():
        np.testing.assert_array_equal(value, uninterrupted_weights[name], err_msg=name)


# -- full disks --------------------------------------------------------------------------------


def limited_file_size(max_bytes):
    """preexec_fn: files may grow to `max_bytes` only, and a bigger write fails with EFBIG
    (as it would with ENOSPC on a full disk) instead of killing the process (SIGXFSZ)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return limit


def run_limited(env, tmp_path, script_name, args, max_bytes):
    """The script run as a process whose files may not grow beyond `max_bytes`.

    A process of its own: the limit holds for the whole process, pytest's capture
    files included."""
    out = tmp_path / "out"
    result = run_script(tmp_path, script_name, arguments(env, out, args),
                        preexec_fn=limited_file_size(max_bytes))
    return result, out


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    """A --snapshot-dir holding one tiny training checkpoint (update 1), as train.py with
    TRAIN_TINY writes it (made in-process through the API)."""
    out = tmp_path_factory.mktemp("trained") / "out"
    result = deeplab_resnet.train(config_of(arguments(env, out, TRAIN_TINY)
                                            + ["--num-steps", "1"]))
    assert result.checkpoint == str(out / "model.ckpt-1")
    return out


WRITE_CASES = [
    ("masks", "inference.py", ["{root}/data/img/0.jpg", "{root}/ckpt/tiny", "--save-dir", "{out}"],
     300, "out/0_mask.png"),
    ("saved-model", "export.py",
     ["--restore-from", "{root}/ckpt/tiny", "--output-dir", "{out}/saved"], 4096, "out/saved"),
    ("converted-checkpoint", "convert.py",
     ["{root}/tiny.prototxt", "--caffemodel", "{root}/tiny.caffemodel", "--ckpt-path", "{out}/c"],
     100_000, "out/c"),
]


@pytest.mark.parametrize("case,script_name,args,max_bytes,culprit", WRITE_CASES,
                         ids=[c[0] for c in WRITE_CASES])
def test_disk_full_names_the_file_and_leaves_nothing(env, tmp_path, case, script_name, args,
                                                     max_bytes, culprit):
    result, out = run_limited(env, tmp_path, script_name, args, max_bytes)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and lines[0].endswith(f"{culprit}: File too large")
    assert not out.exists() or not any(out.rglob("*"))


def test_disk_full_during_checkpoint_save_keeps_the_previous_one(trained, env, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    data_size = next(out.glob("model.ckpt-1.data-*")).stat().st_size
    result, _ = run_limited(env, tmp_path, "train.py", TRAIN_TINY + ["--num-steps", "3"],
                            data_size // 2)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert [line for line in lines if line.startswith("error")] == lines[-1:], result.stderr
    assert lines[-1].endswith("model.ckpt-2: File too large"), result.stderr
    assert sorted(p.name for p in out.iterdir() if "ckpt-2" in p.name) == []
    assert not list(out.glob(".tmp*"))
    assert checkpoint.resolve(out).endswith("model.ckpt-1")
    checkpoint.load_weights(out)


def test_corrupt_snapshot_is_one_line_on_resume(trained, env, tmp_path, command):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    data = next(out.glob("model.ckpt-1.data-*"))
    data.write_bytes(flip_bit(data.read_bytes()))
    result = command("train.py", arguments(env, out, TRAIN_TINY) + ["--num-steps", "3"])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "model.ckpt-1: corrupt or truncated" in lines[0]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in trained.iterdir())


def test_signal_to_one_worker_stops_every_worker_at_the_same_update(env, tmp_path):
    """Under --strategy multi-worker a SIGTERM to the second worker alone stops both
    workers after the same update, with the chief's checkpoint of that update."""
    out = tmp_path / "out"
    command = [sys.executable, script("train.py"), *arguments(env, out, TRAIN_TINY),
               "--num-steps", "100000", "--save-pred-every", "100000", "--strategy",
               "multi-worker", "--learning-rate", "1e-6"]
    ports = free_ports(2)
    workers = [subprocess.Popen(command, cwd=tmp_path, env=worker_env(ports, i),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for i in range(2)]
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out.exists() and any(out.glob("events.*"))):
            time.sleep(0.02)
        workers[1].send_signal(signal.SIGTERM)
        errors = [worker.communicate(timeout=120)[1] for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    stopped = []
    for worker, stderr in zip(workers, errors):
        lines = stderr.strip().splitlines()
        assert worker.returncode == 128 + signal.SIGTERM and len(lines) == 1, stderr
        assert lines[0].startswith("error: SIGTERM: stopped after update"), stderr
        stopped.append(int(lines[0].split("after update ")[1].split()[0]))
    assert stopped[0] == stopped[1]
    assert checkpoint.resolve(out).endswith(f"model.ckpt-{stopped[0]}")
