"""Bad input and faults, end to end: every case is a command line.

Each must end with a non-zero exit status and exactly one line on stderr,
`error: ...`, naming the culprit — no traceback — and must leave no partial
output file behind.

Most commands run in-process, as their script runs them (`conftest.run_command`:
`cli.run`, with stderr captured at the file descriptor, so TensorFlow's native
log lines count). A real process is started only where the process is the
point: a failure of each script as a process (its wiring, TensorFlow's quiet
import, the exit status a shell sees), SIGKILL and signals, and full disks (a
file-size limit set on the process).
"""

import codecs
import collections
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, process_state_kept, run_command
from test_distribute import free_ports, worker_env
from deeplab_resnet.data.palette import save_label_png
import deeplab_resnet
from deeplab_resnet.weights import caffe
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.weights.caffe import write_caffemodel
from deeplab_resnet.cli import convert, evaluate, export, inference, train, train_flags
from deeplab_resnet.model.network import DeepLabResNet
from deeplab_resnet.training import TRAIN
from kaffe import caffe_pb

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny checkpoint, a matching deploy prototxt + caffemodel, and a small VOC-style dataset."""
    root = tmp_path_factory.mktemp("faults")
    model = DeepLabResNet("tiny", NUM_CLASSES, seed=1)
    params = {k: v.numpy() for k, v in model.params.items()}
    checkpoint.save_params(params, root / "ckpt" / "tiny", "tiny", NUM_CLASSES)
    (root / "tiny.prototxt").write_text(caffe.deploy_prototxt("tiny", NUM_CLASSES))
    write_caffemodel(root / "tiny.prototxt", params, root / "tiny.caffemodel")
    other = caffe.deploy_prototxt("tiny", NUM_CLASSES + 2)
    (root / "other.prototxt").write_text(other)
    write_caffemodel(None, {**params, **{k: v for k, v in (
        (n, p.numpy()) for n, p in DeepLabResNet("tiny", NUM_CLASSES + 2).params.items())
        if k.startswith("fc1_voc12")}}, root / "other.caffemodel", text=other)

    data = root / "data"
    (data / "img").mkdir(parents=True)
    (data / "lab").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data / "img" / f"{i}.jpg")
        save_label_png(rng.integers(0, NUM_CLASSES, (40, 44)), data / "lab" / f"{i}.png")
    pixels = rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(data / "lab" / "rgb.png")
    save_label_png(np.full((40, 44), 7), data / "lab" / "seven.png")
    save_label_png(np.zeros((30, 44)), data / "lab" / "short.png")
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
     ["{root}/tiny.prototxt", "--caffemodel", "{root}/truncated.caffemodel",
      "--ckpt-path", "{out}/c"],
     "truncated.caffemodel"),
    ("random-bytes-caffemodel", "convert.py",
     ["{root}/tiny.prototxt", "--caffemodel", "{root}/random.caffemodel", "--ckpt-path", "{out}/c"],
     "random.caffemodel"),
    ("prototxt-syntax-error", "convert.py",
     ["{root}/syntax.prototxt", "--code-output-path", "{out}/net.py"], "syntax.prototxt"),
    ("unknown-layer-type", "convert.py",
     ["{root}/unknown.prototxt", "--code-output-path", "{out}/n.py"], "LRN"),
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
    ("rgb-label-png", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/rgb.txt",
      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"], "rgb.png"),
    ("label-value-out-of-range", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/seven.txt",
      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"], "seven.png"),
    ("image-label-size-mismatch", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/short.txt",
      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"], "short.png"),
    ("missing-file-in-list", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/missing.txt",
      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"], "nope.jpg"),
    ("empty-list", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/empty.txt",
      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"], "empty.txt"),
    ("caffemodel-with-wrong-model-flag", "inference.py",
     ["{root}/data/img/0.jpg", "{root}/tiny.caffemodel", "--model", "resnet50",
      "--save-dir", "{out}"], "tiny.caffemodel"),
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
    ("label-beyond-num-classes-in-training", "train.py",
     ["--model", "tiny", "--num-classes", "3", "--data-dir", "{root}/data", "--data-list",
      "{root}/data/seven.txt", "--input-size", "33,33", "--batch-size", "1",
      "--snapshot-dir", "{out}"], "seven.png: label values 7"),
    # Oversized inputs, refused from their headers.
    ("image-header-claims-1.6-gigapixels", "inference.py",
     ["{root}/huge.png", "{root}/ckpt/tiny", "--save-dir", "{out}"], "huge.png"),
    ("training-image-header-claims-3-gigapixels", "train.py",
     ["--model", "tiny", "--num-classes", "3", "--data-dir", "{root}/data", "--data-list",
      "{root}/data/huge.txt", "--input-size", "33,33", "--batch-size", "1",
      "--snapshot-dir", "{out}"], "huge.jpg: image too large"),
    ("caffemodel-blob-claims-gigabytes", "convert.py",
     ["{root}/tiny.prototxt", "--caffemodel", "{root}/bomb.caffemodel", "--ckpt-path", "{out}/c"],
     "bomb.caffemodel: layer 'conv1' blob 0"),
    ("prototxt-absurd-channel-count", "convert.py",
     ["{root}/absurd.prototxt", "--code-output-path", "{out}/net.py"], "layer 'conv1'"),
    # Corrupt state.
    ("truncated-checkpoint-data", "inference.py",
     ["{root}/data/img/0.jpg", "{root}/ckpt_truncated/tiny", "--save-dir", "{out}"],
     "ckpt_truncated/tiny: corrupt or truncated"),
    ("bit-flipped-checkpoint-data", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/good.txt",
      "--restore-from", "{root}/ckpt_flipped/tiny", "--save-dir", "{out}"],
     "ckpt_flipped/tiny: corrupt or truncated"),
    ("checkpoint-state-names-missing-prefix", "export.py",
     ["--restore-from", "{root}/ckpt_stale", "--output-dir", "{out}/saved"],
     "ckpt_stale/checkpoint: names checkpoint"),
    ("garbled-checkpoint-state-file-on-resume", "train.py",
     ["--model", "tiny", "--num-classes", "3", "--data-dir", "{root}/data", "--data-list",
      "{root}/data/good.txt", "--input-size", "33,33", "--snapshot-dir",
      "{root}/ckpt_garbled_state"], "ckpt_garbled_state/checkpoint: not a readable"),
    ("truncated-caffemodel-for-inference", "inference.py",
     ["{root}/data/img/0.jpg", "{root}/truncated.caffemodel", "--model", "tiny", "--save-dir",
      "{out}"], "truncated.caffemodel"),
    # Encodings whose meaning is unclear.
    ("16-bit-label-above-255", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/lab300.txt",
      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"], "lab300.png"),
    ("label-with-transparent-pixels", "train.py",
     ["--model", "tiny", "--num-classes", "3", "--data-dir", "{root}/data", "--data-list",
      "{root}/data/transparent.txt", "--input-size", "33,33", "--batch-size", "1",
      "--snapshot-dir", "{out}"], "transparent.png"),
    ("list-not-utf8", "evaluate.py",
     ["--data-dir", "{root}/data", "--data-list", "{root}/data/latin1.txt",
      "--restore-from", "{root}/ckpt/tiny", "--save-dir", "{out}"], "latin1.txt:2: not UTF-8"),
    ("unknown-model-name", "inference.py",
     ["{root}/data/img/0.jpg", "{root}/ckpt/tiny", "--model", "resnet18", "--save-dir", "{out}"],
     "resnet18"),
]


def png_claiming(width, height):
    """A PNG whose header claims width x height gray pixels, with almost no pixel data."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def jpeg_claiming(jpeg, width, height):
    """A real JPEG whose frame header is patched to claim width x height."""
    at = jpeg.index(b"\xff\xc0") + 5  # marker, length (2), precision (1)
    return jpeg[:at] + struct.pack(">HH", height, width) + jpeg[at + 4:]


def copy_checkpoint(source, folder, damage=None):
    """Copies checkpoint prefix `source`'s files into `folder`; `damage(bytes)` edits the .data."""
    folder.mkdir()
    for path in source.parent.glob(source.name + ".*"):
        data = path.read_bytes()
        if damage is not None and ".data-" in path.name:
            data = damage(data)
        (folder / path.name).write_bytes(data)


def flip_bit(data):
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1:]


def write_bad_inputs(root):
    good = (root / "tiny.caffemodel").read_bytes()
    (root / "truncated.caffemodel").write_bytes(good[: len(good) // 3])
    # A caffemodel whose first blob claims 100000 x 100000 x 3 x 3 values and holds 10.
    bomb = caffe_pb.NetParameter()
    layer = bomb.layer.add(name="conv1", type="Convolution")
    blob = layer.blobs.add()
    blob.shape.dim.extend([100000, 100000, 3, 3])
    blob.data.extend([1.0] * 10)
    (root / "bomb.caffemodel").write_bytes(bomb.SerializeToString())
    (root / "huge.png").write_bytes(png_claiming(40000, 40000))
    (root / "data" / "huge.jpg").write_bytes(
        jpeg_claiming((root / "data" / "img" / "0.jpg").read_bytes(), 60000, 50000))
    (root / "data" / "huge.txt").write_text("/huge.jpg /lab/0.png\n")
    copy_checkpoint(root / "ckpt" / "tiny", root / "ckpt_truncated",
                    lambda data: data[: len(data) // 2])
    copy_checkpoint(root / "ckpt" / "tiny", root / "ckpt_flipped", flip_bit)
    copy_checkpoint(root / "ckpt" / "tiny", root / "ckpt_stale")
    (root / "ckpt_stale" / "checkpoint").write_text('model_checkpoint_path: "tiny-9"\n')
    copy_checkpoint(root / "ckpt" / "tiny", root / "ckpt_garbled_state")
    (root / "ckpt_garbled_state" / "checkpoint").write_bytes(b"\x00\x17{{ not a state file")
    (root / "random.caffemodel").write_bytes(np.random.default_rng(1).bytes(5000))
    text = (root / "tiny.prototxt").read_text()
    (root / "syntax.prototxt").write_text(text.replace("layer {", "layer {{", 3))
    (root / "unknown.prototxt").write_text(
        text + '\nlayer {\n  name: "norm9"\n  type: "LRN"\n  bottom: "fc1_voc12"\n'
               '  top: "norm9"\n}\n')
    (root / "wide.prototxt").write_text(text.replace("num_output: 16", "num_output: 24", 1))
    (root / "absurd.prototxt").write_text(
        text.replace("num_output: 16", "num_output: 2000000000", 1))
    write_odd_encodings(root / "data")


def write_odd_encodings(data):
    """Readable oddities (grayscale and CMYK JPEGs, 16-bit and opaque gray+alpha labels,
    a list with a byte-order mark) beside the same content in plain form; and unreadable
    ones (a 16-bit label over 255, transparent label pixels, a Latin-1 list)."""
    rgb = np.asarray(Image.open(data / "img" / "1.jpg"))
    labels = np.asarray(Image.open(data / "lab" / "1.png"))
    Image.fromarray(rgb).convert("L").save(data / "gray.jpg", quality=95)
    Image.fromarray(rgb).convert("CMYK").save(data / "cmyk.jpg", quality=95)
    Image.fromarray(labels.astype(np.uint16)).save(data / "lab16.png")
    Image.fromarray(np.stack([labels, np.full_like(labels, 255)], -1), "LA").save(data / "la.png")
    # The reference: what a plain RGB JPEG reader and palette labels give.
    Image.open(data / "gray.jpg").convert("RGB").save(data / "gray_rgb.png")
    Image.open(data / "cmyk.jpg").convert("RGB").save(data / "cmyk_rgb.png")
    (data / "odd.txt").write_bytes(codecs.BOM_UTF8 + b"/gray.jpg /lab16.png\n/cmyk.jpg /la.png\n")
    (data / "plain.txt").write_text("/gray_rgb.png /lab/1.png\n/cmyk_rgb.png /lab/1.png\n")
    Image.fromarray(np.full((40, 44), 300, np.uint16)).save(data / "lab300.png")
    transparent = np.stack([labels, np.where(np.arange(44) < 4, 0, 255)[None].repeat(40, 0)], -1)
    Image.fromarray(transparent.astype(np.uint8), "LA").save(data / "transparent.png")
    (data / "lab300.txt").write_text("/img/0.jpg /lab300.png\n")
    (data / "transparent.txt").write_text("/img/0.jpg /transparent.png\n")
    (data / "latin1.txt").write_bytes("/img/0.jpg /lab/0.png\n/img/caf\u00e9.jpg /lab/1.png\n"
                                      .encode("latin-1"))


COMMANDS = {"convert.py": convert.main, "evaluate.py": evaluate.main, "export.py": export.main,
            "inference.py": inference.main, "train.py": train.main}
Result = collections.namedtuple("Result", "returncode stdout stderr")


@pytest.fixture
def command(tmp_path, capfd, monkeypatch):
    """`command(script_name, argv)` runs a script's command in-process -> Result, in
    `tmp_path` (the subprocesses' working folder), the process state kept
    (`process_state_kept`)."""
    monkeypatch.chdir(tmp_path)

    def run(script_name, argv):
        return Result(*run_command(COMMANDS[script_name], argv, capfd))

    with process_state_kept():
        yield run


def run_script(tmp_path, script_name, argv, **options):
    """The script run as a real process (in `tmp_path`) -> subprocess.CompletedProcess."""
    return subprocess.run([sys.executable, script(script_name), *map(str, argv)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), **options)


def arguments(env, out, args):
    """`args` with {root} the fixture folder and {out} the output folder."""
    return [a.format(root=env, out=out) for a in args]


# Bad input given to real processes, for what only a process shows: the script's wiring,
# TensorFlow imported quietly by `cli.run` (in-process it finds it loaded already) and the
# exit status a shell sees. Cases that fail in the input pipeline or TensorFlow's checkpoint
# reader, where native threads and log lines are. (inference.py, export.py and convert.py
# fail as processes in the full-disk tests.)
IN_A_PROCESS = {"bit-flipped-checkpoint-data", "training-rgb-label"}


@pytest.mark.parametrize("case,script_name,args,culprit", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_error(env, tmp_path, command, case, script_name, args, culprit):
    before = sorted(p.name for p in env.rglob("*"))
    out = tmp_path / "out"
    argv = arguments(env, out, args)
    if case in IN_A_PROCESS:
        result = run_script(tmp_path, script_name, argv)
    else:
        result = command(script_name, argv)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert culprit in lines[0]
    # Nothing was written: no output folder content, no stray file beside the inputs.
    assert not out.exists() or not any(out.rglob("*"))
    if script_name == "train.py":  # not even an empty --snapshot-dir
        assert not out.exists()
    assert sorted(p.name for p in env.rglob("*")) == before


def test_every_script_fails_as_a_process_somewhere():
    kinds = {script_name for case, script_name, _, _ in CASES if case in IN_A_PROCESS}
    assert kinds | {script_name for _, script_name, *_ in WRITE_CASES} == set(COMMANDS)


def test_suite_has_at_least_twenty_distinct_cases():
    assert len({c[0] for c in CASES}) >= 20


TRAIN_TINY = ["--model", "tiny", "--num-classes", str(NUM_CLASSES), "--data-dir", "{root}/data",
              "--data-list", "{root}/data/good.txt", "--input-size", "33,33", "--batch-size", "2",
              "--save-pred-every", "1", "--save-num-images", "0", "--snapshot-dir", "{out}"]


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


# -- odd encodings that are clear -------------------------------------------------------------


def test_odd_encodings_read_as_their_plain_equivalents(env, tmp_path, command):
    """Grayscale and CMYK JPEGs, 16-bit and opaque gray+alpha labels, a list with a
    byte-order mark: evaluate.py scores them exactly as their plain RGB / palette
    equivalents, and train.py trains on them."""
    data = env / "data"
    cmyk = np.asarray(Image.open(data / "cmyk_rgb.png"), np.float32)
    assert np.abs(cmyk - np.asarray(Image.open(data / "img" / "1.jpg"))).mean() < 4
    scores = []
    for name in ("odd", "plain"):
        result = command("evaluate.py", ["--data-dir", data, "--data-list", data / f"{name}.txt",
                                         "--restore-from", env / "ckpt" / "tiny"])
        assert result.returncode == 0, result.stderr
        scores.append(result.stdout)
    assert scores[0] == scores[1]
    out = tmp_path / "out"
    result = command("train.py", arguments(env, out, [
        *TRAIN_TINY[:6], "--data-list", "{root}/data/odd.txt", *TRAIN_TINY[8:],
        "--num-steps", "1"]))
    assert result.returncode == 0, result.stderr
    assert checkpoint.resolve(out).endswith("model.ckpt-1")


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


def rewrite_tensor(prefix, key, change):
    """Rewrites the checkpoint at `prefix` (every tensor as it is) with `change(value)` stored
    under `key`: what a file damaged in its values, with valid checksums, looks like."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(prefix))
    dtypes = reader.get_variable_to_dtype_map()
    keys = sorted(dtypes)
    values = []
    for name in keys:
        value = reader.get_tensor(name)
        values.append(tf.constant(change(np.array(value)) if name == key else value, dtypes[name]))
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=keys, shape_and_slices=[""] * len(keys),
                      tensors=values)


def _first_to(value):
    def change(array):
        array.flat[0] = value
        return array
    return change


RESUME_VALUE_CASES = [
    ("nan-weights", "params/conv1.Sweights", _first_to(np.nan),
     "tensor 'conv1/weights' holds 1 NaN or infinite values"),
    ("inf-momentum", "optimizer/velocity/res2a_branch2b.Sweights", _first_to(np.inf),
     "tensor 'optimizer/velocity/res2a_branch2b/weights' holds 1 NaN or infinite values"),
    ("negative-variance", "params/bn_conv1.Svariance", lambda a: -np.ones_like(a),
     "tensor 'bn_conv1/variance' holds 16 BatchNorm variances at or below -1e-05"),
    ("negative-step", "step", lambda a: np.array(-3, a.dtype),
     "tensor 'step' holds 1 negative values"),
]


@pytest.mark.parametrize("case,key,change,fragment", RESUME_VALUE_CASES,
                         ids=[c[0] for c in RESUME_VALUE_CASES])
def test_a_resumed_checkpoint_with_impossible_values_is_refused_before_any_update(
        trained, env, tmp_path, command, case, key, change, fragment):
    """Issue 26 item 6: refused naming the tensor, one line, exit 2; nothing is written (no
    TensorBoard events file of a run that never was); the API raises BadFileError."""
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    rewrite_tensor(out / "model.ckpt-1", key + "/.ATTRIBUTES/VARIABLE_VALUE", change)
    before = sorted(p.name for p in out.iterdir())
    result = command("train.py", arguments(env, out, TRAIN_TINY) + ["--num-steps", "3"])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {out / 'model.ckpt-1'}: {fragment}"), lines[0]
    assert sorted(p.name for p in out.iterdir()) == before
    if case == "nan-weights":
        with pytest.raises(deeplab_resnet.BadFileError, match=fragment) as error:
            deeplab_resnet.train(config_of(arguments(env, out, TRAIN_TINY)
                                           + ["--num-steps", "3"]))
        assert error.value.path == str(out / "model.ckpt-1")
        assert sorted(p.name for p in out.iterdir()) == before


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
