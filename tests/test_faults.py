"""Bad input and faults, end to end: every case is a real command line.

Each must end with a non-zero exit status and exactly one line on stderr,
`error: ...`, naming the culprit — no traceback — and must leave no partial
output file behind.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from deeplab_resnet import checkpoint, deploy, utils
from deeplab_resnet.model import DeepLabResNet
from kaffe.writer import write_caffemodel

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny checkpoint, a matching deploy prototxt + caffemodel, and a small VOC-style dataset."""
    root = tmp_path_factory.mktemp("faults")
    model = DeepLabResNet("tiny", NUM_CLASSES, seed=1)
    params = {k: v.numpy() for k, v in model.params.items()}
    checkpoint.save_params(params, root / "ckpt" / "tiny", "tiny", NUM_CLASSES)
    (root / "tiny.prototxt").write_text(deploy.deploy_prototxt("tiny", NUM_CLASSES))
    write_caffemodel(root / "tiny.prototxt", params, root / "tiny.caffemodel")
    other = deploy.deploy_prototxt("tiny", NUM_CLASSES + 2)
    (root / "other.prototxt").write_text(other)
    write_caffemodel(None, {**params, **{k: v for k, v in (
        (n, p.numpy()) for n, p in DeepLabResNet("tiny", NUM_CLASSES + 2).params.items())
        if k.startswith("fc1_voc12")}}, root / "other.caffemodel", text=other)

    data = root / "data"
    (data / "img").mkdir(parents=True)
    (data / "lab").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(data / "img" / f"{i}.jpg")
        utils.save_label_png(rng.integers(0, NUM_CLASSES, (40, 44)), data / "lab" / f"{i}.png")
    Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(data / "lab" / "rgb.png")
    utils.save_label_png(np.full((40, 44), 7), data / "lab" / "seven.png")
    utils.save_label_png(np.zeros((30, 44)), data / "lab" / "short.png")
    (data / "not_image.jpg").write_text("this is not a JPEG")
    (data / "empty.jpg").write_bytes(b"")
    lists = {
        "good": "/img/0.jpg /lab/0.png\n/img/1.jpg /lab/1.png\n",
        "rgb": "/img/0.jpg /lab/rgb.png\n",
        "seven": "/img/0.jpg /lab/seven.png\n",
        "short": "/img/0.jpg /lab/short.png\n",
        "missing": "/img/0.jpg /lab/0.png\n/img/nope.jpg /lab/1.png\n",
        "empty": "\n",
    }
    for name, text in lists.items():
        (data / f"{name}.txt").write_text(text)
    (root / "a_file").write_text("a regular file, not a folder")
    write_bad_inputs(root)
    return root


def script(name):
    return os.path.join(ROOT, name)


# (case id, script, arguments ({root} is the fixture folder), text the message must contain)
CASES = [
    ("truncated-caffemodel", "convert.py",
     ["{root}/tiny.prototxt", "--caffemodel", "{root}/truncated.caffemodel", "--ckpt-path", "{out}/c"],
     "truncated.caffemodel"),
    ("random-bytes-caffemodel", "convert.py",
     ["{root}/tiny.prototxt", "--caffemodel", "{root}/random.caffemodel", "--ckpt-path", "{out}/c"],
     "random.caffemodel"),
    ("prototxt-syntax-error", "convert.py", ["{root}/syntax.prototxt",
                                             "--code-output-path", "{out}/net.py"], "syntax.prototxt"),
    ("unknown-layer-type", "convert.py", ["{root}/unknown.prototxt", "--code-output-path", "{out}/n.py"],
     "LRN"),
    ("blob-shape-mismatch", "convert.py",
     ["{root}/wide.prototxt", "--caffemodel", "{root}/tiny.caffemodel", "--ckpt-path", "{out}/c"],
     "conv1"),
    ("caffemodel-for-another-prototxt", "convert.py",
     ["{root}/tiny.prototxt", "--caffemodel", "{root}/other.caffemodel", "--ckpt-path", "{out}/c"],
     "fc1_voc12"),
    ("image-not-an-image", "inference.py", ["{root}/data/not_image.jpg", "{root}/ckpt/tiny",
                                            "--save-dir", "{out}"], "not_image.jpg"),
    ("zero-byte-image", "inference.py", ["{root}/data/empty.jpg", "{root}/ckpt/tiny",
                                         "--save-dir", "{out}"], "empty.jpg"),
    ("missing-checkpoint", "inference.py", ["{root}/data/img/0.jpg", "{root}/ckpt/nothing",
                                            "--save-dir", "{out}"], "nothing"),
    ("num-classes-contradicts-checkpoint", "inference.py",
     ["{root}/data/img/0.jpg", "{root}/ckpt/tiny", "--num-classes", "21", "--save-dir", "{out}"],
     "--num-classes 21"),
    ("model-contradicts-checkpoint", "inference.py",
     ["{root}/data/img/0.jpg", "{root}/ckpt/tiny", "--model", "resnet50", "--save-dir", "{out}"],
     "--model resnet50"),
    ("output-folder-not-writable", "inference.py",
     ["{root}/data/img/0.jpg", "{root}/ckpt/tiny", "--save-dir", "{root}/a_file/sub"], "a_file"),
    ("rgb-label-png", "evaluate.py", ["--data-dir", "{root}/data", "--data-list", "{root}/data/rgb.txt",
                                      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"],
     "rgb.png"),
    ("label-value-out-of-range", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/seven.txt",
      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"], "seven.png"),
    ("image-label-size-mismatch", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/short.txt",
      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"], "short.png"),
    ("missing-file-in-list", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/missing.txt",
      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"], "nope.jpg"),
    ("empty-list", "evaluate.py", ["--data-dir", "{root}/data", "--data-list", "{root}/data/empty.txt",
                                   "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"],
     "empty.txt"),
    ("caffemodel-with-wrong-model-flag", "inference.py",
     ["{root}/data/img/0.jpg", "{root}/tiny.caffemodel", "--model", "resnet50", "--save-dir", "{out}"],
     "tiny.caffemodel"),
    ("export-over-existing-folder", "export.py", ["--restore-from", "{root}/ckpt/tiny",
                                                  "--output-dir", "{root}/data"], "data"),
    ("input-size-not-h-w", "train.py", ["--data-dir", "{root}/data", "--data-list",
                                        "{root}/data/good.txt", "--input-size", "321x321",
                                        "--snapshot-dir", "{out}"], "321x321"),
    ("input-size-too-small", "train.py", ["--data-dir", "{root}/data", "--data-list",
                                          "{root}/data/good.txt", "--input-size", "8,8",
                                          "--snapshot-dir", "{out}"], "8,8"),
    ("training-rgb-label", "train.py", ["--model", "tiny", "--num-classes", "3", "--data-dir",
                                        "{root}/data", "--data-list", "{root}/data/rgb.txt",
                                        "--input-size", "33,33", "--batch-size", "1",
                                        "--snapshot-dir", "{out}"], "rgb.png"),
    ("training-empty-list", "train.py", ["--model", "tiny", "--data-dir", "{root}/data",
                                         "--data-list", "{root}/data/empty.txt",
                                         "--snapshot-dir", "{out}"], "empty.txt"),
    ("unknown-model-name", "inference.py", ["{root}/data/img/0.jpg", "{root}/ckpt/tiny",
                                            "--model", "resnet18", "--save-dir", "{out}"], "resnet18"),
]


def write_bad_inputs(root):
    good = (root / "tiny.caffemodel").read_bytes()
    (root / "truncated.caffemodel").write_bytes(good[: len(good) // 3])
    (root / "random.caffemodel").write_bytes(np.random.default_rng(1).bytes(5000))
    text = (root / "tiny.prototxt").read_text()
    (root / "syntax.prototxt").write_text(text.replace("layer {", "layer {{", 3))
    (root / "unknown.prototxt").write_text(
        text + '\nlayer {\n  name: "norm9"\n  type: "LRN"\n  bottom: "fc1_voc12"\n  top: "norm9"\n}\n')
    (root / "wide.prototxt").write_text(text.replace("num_output: 16", "num_output: 24", 1))


def run_case(env, tmp_path, script_name, args):
    out = tmp_path / "out"
    argv = [a.format(root=env, out=out) for a in args]
    result = subprocess.run([sys.executable, script(script_name), *argv], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return result, out


@pytest.mark.parametrize("case,script_name,args,culprit", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_error(env, tmp_path, case, script_name, args, culprit):
    before = sorted(p.name for p in env.rglob("*"))
    result, out = run_case(env, tmp_path, script_name, args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert culprit in lines[0]
    # Nothing was written: no output folder content, no stray file beside the inputs.
    assert not out.exists() or not any(out.rglob("*"))
    assert sorted(p.name for p in env.rglob("*")) == before


def test_suite_has_at_least_twenty_distinct_cases():
    assert len({c[0] for c in CASES}) >= 20


TRAIN_TINY = ["--model", "tiny", "--num-classes", str(NUM_CLASSES), "--data-dir", "{root}/data",
              "--data-list", "{root}/data/good.txt", "--input-size", "33,33", "--batch-size", "2",
              "--save-pred-every", "1", "--save-num-images", "0", "--snapshot-dir", "{out}"]


def test_nan_loss_is_one_line_error_and_no_bad_checkpoint(env, tmp_path):
    result, out = run_case(env, tmp_path, "train.py",
                           TRAIN_TINY + ["--num-steps", "40", "--learning-rate", "1e9"])
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    # Progress lines may come first (stderr is not a terminal); one error line, last.
    assert [line for line in lines if line.startswith("error")] == lines[-1:], result.stderr
    assert lines[-1].startswith("error: loss became") and "--learning-rate" in lines[-1]
    latest = checkpoint.resolve(out) if any(out.glob("*.index")) else None
    if latest is not None:  # every checkpoint left behind holds finite weights
        assert all(np.isfinite(v).all() for v in checkpoint.read_params(latest).values())


def test_kill_during_checkpoint_saves_leaves_a_loadable_checkpoint(env, tmp_path):
    """SIGKILL at many moments of a run that saves after every update (so most kills
    land in or near a save): the latest checkpoint always loads, and a rerun resumes."""
    out = tmp_path / "out"
    argv = [a.format(root=env, out=out) for a in TRAIN_TINY + ["--num-steps", "100000"]]
    command = [sys.executable, script("train.py"), *argv]
    rng = np.random.default_rng(0)
    kills = 0
    while kills < 4:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   cwd=tmp_path)
        deadline = time.time() + 120
        # Wait for the first save of this run, then kill at a random moment.
        start = len(list(out.glob("*.index"))) if out.exists() else 0
        while time.time() < deadline and (not out.exists() or
                                          len(list(out.glob("*.index"))) <= start):
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, 0.5)))
        process.kill()
        process.wait()
        kills += 1
        latest = checkpoint.resolve(out)
        model = checkpoint.load_weights(latest)
        assert model.variant == "tiny"
    steps = [int(p.name.split("-")[-1].split(".")[0]) for p in out.glob("*.index")]
    assert max(steps) >= 2



# -- signals -----------------------------------------------------------------------------------

SIGNAL_RUN_STEPS = 200


def _signal_run_command(env, out):
    """A deterministic tiny run that saves only at its end (or when stopped)."""
    argv = [a.format(root=env, out=out) for a in TRAIN_TINY]
    return [sys.executable, script("train.py"), *argv, "--num-steps", str(SIGNAL_RUN_STEPS),
            "--save-pred-every", str(10 * SIGNAL_RUN_STEPS), "--deterministic"]


@pytest.fixture(scope="module")
def uninterrupted_weights(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    subprocess.run(_signal_run_command(env, out), check=True, capture_output=True,
                   cwd=out.parent, timeout=300)
    return checkpoint.read_params(checkpoint.resolve(out))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_at_update_boundary_and_rerun_resumes_exactly(env, tmp_path, signum,
                                                                   uninterrupted_weights):
    out = tmp_path / "out"
    command = _signal_run_command(env, out)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path)
    deadline = time.time() + 120
    # The event file appears after the first update.
    while time.time() < deadline and not (out.exists() and any(out.glob("events.*"))):
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    lines = stderr.strip().splitlines()
    assert process.returncode == 128 + signum, stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {signum.name}: stopped after update")
    stopped = int(lines[0].split("after update ")[1].split()[0])
    assert 1 <= stopped < SIGNAL_RUN_STEPS, "the signal came too late to test anything"
    assert checkpoint.resolve(out).endswith(f"model.ckpt-{stopped}")
    assert not list(out.glob("*_temp*")) and not list(out.glob(".tmp*"))

    rerun = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"update {stopped})" in rerun.stderr  # it resumed
    final = checkpoint.read_params(checkpoint.resolve(out))
    assert final.keys() == uninterrupted_weights.keys()
    for name, value in final.items():
        np.testing.assert_array_equal(value, uninterrupted_weights[name], err_msg=name)
