"""`prepare.py folders`: a folder of images and a folder of label PNGs -> train/val lists.

Images (any image extension) and labels (.png) are found in their folders and all
sub-folders and paired by file stem: first where the sub-folder paths agree
(`imgs/a/x.jpg` with `masks/a/x.png`), then, among the rest, by the stem alone where
it is unique on both sides. The split is a permutation of the sorted pairs drawn
from the seed: the same files and seed always give the same lists.
"""

import os

import numpy as np
from PIL import Image

from _common import DeepLabError, check_writable_dir, write_text
from deeplab_resnet.data.images import IMAGE_EXTENSIONS

LABEL_EXTENSIONS = (".png",)
SHOWN = 3  # unpaired files named in the note


def find_files(folder, extensions, flag, skip=None):
    """{path relative to `folder` without extension: path} of the files in `folder` and its
    sub-folders whose extension is one of `extensions` (hidden files and folders skipped,
    and the folder `skip`: the labels' folder inside the images' one)."""
    if not os.path.isdir(folder):
        raise DeepLabError(f"{flag} {folder}: no such folder")
    found = {}
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (
            skip and os.path.abspath(os.path.join(top, d)) == os.path.abspath(skip)))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(extensions):
                continue
            path = os.path.join(top, name)
            key = os.path.splitext(os.path.relpath(path, folder))[0]
            if key in found:
                raise DeepLabError(f"{flag} {folder}: {found[key]} and {path} have the same "
                                   "name: which one is meant is unclear; rename one")
            found[key] = path
    return found


def pair(images, labels):
    """([(image, label)] sorted, unpaired images, unpaired labels) of two `find_files` maps."""
    pairs = {key: (images[key], labels[key]) for key in images.keys() & labels.keys()}
    rest_images = {k: v for k, v in images.items() if k not in pairs}
    rest_labels = {k: v for k, v in labels.items() if k not in pairs}
    by_stem = {}
    for side, rest in ((0, rest_images), (1, rest_labels)):
        for key in rest:
            by_stem.setdefault(os.path.basename(key), ([], []))[side].append(key)
    for stem, (image_keys, label_keys) in by_stem.items():
        if len(image_keys) == 1 and len(label_keys) == 1:
            pairs[image_keys[0]] = (rest_images.pop(image_keys[0]),
                                    rest_labels.pop(label_keys[0]))
    return ([pairs[key] for key in sorted(pairs)], sorted(rest_images.values()),
            sorted(rest_labels.values()))


def split(pairs, val_fraction, seed):
    """(train pairs, val pairs): round(fraction x count) pairs (at least 1 when the fraction
    is not 0 and there are 2 pairs or more) drawn by the seed, each list in sorted order."""
    count = len(pairs)
    val_count = int(round(val_fraction * count))
    if val_fraction > 0 and count >= 2:
        val_count = min(max(val_count, 1), count - 1)
    order = np.random.default_rng(seed).permutation(count)
    val = set(int(i) for i in order[:val_count])
    return ([p for i, p in enumerate(pairs) if i not in val],
            [p for i, p in enumerate(pairs) if i in val])


def check_label_modes(pairs, labels_dir):
    """A one-line error for the first label PNG in colour (RGB, RGBA): training reads class
    indices, so colour-coded masks are converted first. Read from the headers only."""
    for _, label in pairs:
        try:
            with Image.open(label) as image:
                mode = image.mode
        except (OSError, SyntaxError, ValueError):
            continue  # training names an unreadable file
        if mode in ("RGB", "RGBA"):
            raise DeepLabError(f"{label}: an {mode} image, not a PNG of class indices: convert "
                               "colour-coded masks first (python dataset/convert_rgb_labels.py "
                               f"{labels_dir} --classes FILE --output-dir LABELS), then pass "
                               "--labels LABELS")


def _note_unpaired(files, what, where):
    if files:
        shown = ", ".join(files[:SHOWN]) + (", ..." if len(files) > SHOWN else "")
        print(f"note: {len(files)} {what} without {where}, left out: {shown}")


def _line(data_dir, image, label):
    fields = [os.path.relpath(path, data_dir) for path in (image, label)]
    for path, field in zip((image, label), fields):
        if any(c.isspace() for c in field):
            raise DeepLabError(f"{path}: a space in the path: list files separate the image "
                               "and the label by whitespace; rename it")
    return f"/{fields[0]} /{fields[1]}\n"


def prepare_folders(images_dir, labels_dir, list_dir, name, val_fraction, seed):
    """Pairs, splits and writes `list_dir/NAME_train.txt` and `NAME_val.txt`; prints what it
    did and the --data-dir to use (the folder holding both `images_dir` and `labels_dir`)."""
    if os.path.abspath(images_dir) == os.path.abspath(labels_dir):
        raise DeepLabError(f"--images and --labels are the same folder ({images_dir}): keep "
                           "the label PNGs in a folder of their own")
    images = find_files(images_dir, IMAGE_EXTENSIONS, "--images", skip=labels_dir)
    labels = find_files(labels_dir, LABEL_EXTENSIONS, "--labels")
    pairs, lone_images, lone_labels = pair(images, labels)
    if not pairs:
        raise DeepLabError(f"no image of --images {images_dir} ({len(images)} images) has a "
                           f"label of the same name in --labels {labels_dir} ({len(labels)} "
                           "label PNGs): images and labels are paired by file name, e.g. "
                           "x.jpg with x.png")
    check_label_modes(pairs, labels_dir)
    _note_unpaired(lone_images, "images", "a label")
    _note_unpaired(lone_labels, "labels", "an image")
    data_dir = os.path.commonpath([os.path.abspath(images_dir), os.path.abspath(labels_dir)])
    lines = {part: "".join(_line(data_dir, *p) for p in chosen)
             for part, chosen in zip(("train", "val"), split(pairs, val_fraction, seed))}
    list_dir = check_writable_dir(list_dir, "--list-dir")
    paths = {}
    for part, text in lines.items():
        paths[part] = os.path.join(list_dir, f"{name}_{part}.txt")
        write_text(paths[part], text)
        print(f"{part}: {text.count(chr(10))} pairs -> {paths[part]}")
    print(f"{name}: {len(pairs)} image/label pairs (val fraction {val_fraction:g}, seed {seed})")
    print(f"use --data-dir {data_dir} --data-list {paths['train']} (validation and "
          f"evaluation: --data-list {paths['val']})")
    return paths
