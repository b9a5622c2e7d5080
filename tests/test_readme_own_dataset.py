"""The README's "Your own dataset" runs as written (issue 27 item 9): its classes file and its
commands, in-process, on a small dataset made here (RGB masks in the file's own palette, white
unlabelled pixels, a sub-folder, a phone photo stored sideways with EXIF orientation 6), with
the tiny network and a few updates added to the training command."""

import importlib
import json
import re
import shlex
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, run_command, tiny_model

SECTION = "## Your own dataset"
# Added to the training command: the tiny network, a few small updates.
SMALL = ["--model", "tiny", "--num-steps", "4", "--batch-size", "2", "--input-size", "33,33",
         "--save-pred-every", "2", "--save-num-images", "0"]
WHITE = (255, 255, 255)


def section():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def block(text, kind):
    return re.search(rf"```{kind}\n(.*?)```", text, re.S).group(1)


def commands(text):
    """The commands of a ```bash block: continuation lines joined, comments skipped."""
    joined = block(text, "bash").replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def palette_of(classes_text):
    return [tuple(int(v) for v in line.split()[:3]) for line in classes_text.splitlines()
            if line.split("#")[0].strip()]


def sample(rng, h, w, colours):
    """(RGB photo, RGB mask in `colours` with a white unlabelled border) of random blobs."""
    classes = np.zeros((h, w), np.int64)
    for index in range(1, len(colours)):
        y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
        classes[y:y + 12, x:x + 14] = index
    photo = (np.asarray(colours)[classes] * 0.7 + rng.normal(40, 10, (h, w, 3))).clip(0, 255)
    mask = np.asarray(colours, np.uint8)[classes]
    mask[0] = WHITE
    return photo.astype(np.uint8), mask


def make_dataset(root, colours):
    """imgs/ (one in a sub-folder, one stored sideways with EXIF orientation 6) and masks/,
    drawn as the photos are shown; init.caffemodel, a tiny net's weights."""
    from deeplab_resnet.weights.caffe import deploy_prototxt, write_caffemodel
    rng = np.random.default_rng(0)
    (root / "imgs" / "garden").mkdir(parents=True)
    (root / "masks").mkdir()
    for index in range(8):
        photo, mask = sample(rng, 40, 48, colours)
        folder = root / "imgs" / ("garden" if index == 3 else "")
        Image.fromarray(photo).save(folder / f"tree_{index}.jpg", quality=95)
        Image.fromarray(mask).save(root / "masks" / f"tree_{index}.png")
    photo, mask = sample(rng, 48, 40, colours)  # as shown: 40 wide, 48 high
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned 90 degrees counter-clockwise; viewers turn it back
    Image.fromarray(np.ascontiguousarray(np.rot90(photo, 1))).save(
        root / "imgs" / "phone.jpg", quality=95, exif=exif)
    Image.fromarray(mask).save(root / "masks" / "phone.png")
    prototxt = root / "tiny.prototxt"
    prototxt.write_text(deploy_prototxt("tiny", 21))
    net = tiny_model(21, seed=5)
    write_caffemodel(str(prototxt), {k: v.numpy() for k, v in net.params.items()},
                     str(root / "init.caffemodel"))


def main_of(script):
    """The `main` a README command's script runs."""
    if script.startswith("dataset/"):
        sys.path.insert(0, str(ROOT / "dataset"))
        return importlib.import_module(script[len("dataset/"):-len(".py")]).main
    return importlib.import_module(f"deeplab_resnet.cli.{script[:-len('.py')]}").main


@pytest.mark.usefixtures("process_state_restored")
def test_your_own_dataset_runs_as_written(tmp_path, monkeypatch, capfd):
    text = section()
    classes_text = block(text, "text")
    colours = palette_of(classes_text)
    (tmp_path / "classes.txt").write_text(classes_text)
    make_dataset(tmp_path, colours)
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for argv in commands(text):
        assert argv[0] == "python", argv
        script, args = argv[1], argv[2:]
        if script == "train.py":
            args += SMALL
        status, out, err = run_command(main_of(script), args, capfd)
        assert status == 0, f"{' '.join(argv)}\n{out}\n{err}"
        outputs[script] = out
    from deeplab_resnet.data.labels import read_label
    from deeplab_resnet.data.lists import read_list
    from deeplab_resnet.weights import checkpoint
    # The masks became class indices, white the ignore label; the pairs split 8 + 1.
    labels = read_label(tmp_path / "labels" / "tree_0.png")
    assert labels[0].tolist() == [255] * 48 and set(np.unique(labels)) <= {0, 1, 2, 255}
    train = read_list(str(tmp_path), str(tmp_path / "lists" / "folders_train.txt"))[0]
    val = read_list(str(tmp_path), str(tmp_path / "lists" / "folders_val.txt"))[0]
    assert len(train) + len(val) == 9 and len(val) == 1
    assert f"use --data-dir {tmp_path}" in outputs["dataset/prepare.py"]
    # The checkpoint records the names and colours; evaluation reports under the names.
    names = tuple(line.split(None, 3)[3].strip() for line in classes_text.splitlines()
                  if line.split("#")[0].strip())
    info = checkpoint.describe(tmp_path / "snapshots_own")
    assert (info.num_classes, info.class_names, info.class_colours) == (3, names, tuple(colours))
    assert "ripe fruit" in outputs["evaluate.py"]
    # Validated while training: the best checkpoint is kept, and evaluate.py scores it alike.
    best = json.loads((tmp_path / "snapshots_own" / "best" / "best.json").read_text())
    assert best["update"] in (2, 4)
    assert f"Mean IoU: {best['mean_iou']:.4f}" in outputs["evaluate.py"]
    assert outputs["evaluate.py"].strip().splitlines()[-1].startswith("Mean IoU: ")
    # Coloured predictions in the file's colours, the phone photo as it is shown.
    mask = Image.open(tmp_path / "predictions" / "phone_mask.png")
    assert mask.size == (40, 48)
    assert mask.getpalette()[:9] == [v for colour in colours for v in colour]
    overlay = Image.open(tmp_path / "predictions" / "phone_overlay.png")
    assert overlay.size == (40, 48)
    legend = np.asarray(Image.open(tmp_path / "predictions" / "legend.png"))
    from deeplab_resnet.cli.pictures import SWATCH
    for colour in colours:  # a swatch of each class's colour
        assert (legend == colour).all(axis=-1).sum() >= (SWATCH - 2) ** 2, colour
