"""Bad input, end to end: every case is a command line (faults while a command runs, such as
signals, SIGKILL and full disks: `test_interruptions.py`).

Each must end with a non-zero exit status and exactly one line on stderr,
`error: ...`, naming the culprit — no traceback — and must leave no partial
output file behind.

Most commands run in-process, as their script runs them (`conftest.run_command`:
`cli.run`, with stderr captured at the file descriptor, so TensorFlow's native
log lines count). A real process is started only where the process is the
point: a failure of a script as a process (its wiring, TensorFlow's quiet
import, the exit status a shell sees).
"""

import codecs
import collections
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, process_state_kept, run_command
from deeplab_resnet.data.palette import save_label_png
from deeplab_resnet.weights import caffe
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.weights.caffe import write_caffemodel
from deeplab_resnet.cli import convert, evaluate, export, inference, train
from deeplab_resnet.model.network import DeepLabResNet
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


TRAIN_TINY = ["--model", "tiny", "--num-classes", str(NUM_CLASSES), "--data-dir", "{root}/data",
              "--data-list", "{root}/data/good.txt", "--input-size", "33,33", "--batch-size", "2",
              "--save-pred-every", "1", "--save-num-images", "0", "--snapshot-dir", "{out}"]


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
