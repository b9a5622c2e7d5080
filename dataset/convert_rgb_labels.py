"""Converts colour-coded label images to palette PNGs of class indices.

Many tools save labels as plain RGB images (each class drawn in its colour)
instead of palette PNGs, whose pixel values are the class indices. Training
reads labels as indices, so such files are converted here: each colour becomes
its class index. The colours are VOC's by default (e.g. (128, 0, 0) -> 1
aeroplane, (224, 224, 192) -> 255 ignore), or those of a classes file
(--classes, one 'R G B name' line per class: line i is class i), with
--ignore-colour R,G,B -> 255. A colour that is not a class colour is an error
naming the file, the colour, its pixel count and one position, never a silent
guess; a failed run writes nothing (the PNGs are moved into --output-dir only
when every file converted).

Palette and grayscale images are already index labels; they are copied with
their values unchanged.

    python dataset/convert_rgb_labels.py my_rgb_labels/ --output-dir my_labels/
    python dataset/convert_rgb_labels.py masks/ --classes classes.txt \
        --ignore-colour 255,255,255 --output-dir labels/
"""

import argparse
import glob
import os
import shutil
import tempfile

import numpy as np
from tqdm import tqdm

from _common import (ArgumentParser, IGNORE_LABEL, NUM_VOC_CLASSES, DeepLabError,
                     check_label_values, check_writable_dir, run)
from deeplab_resnet import cli
from deeplab_resnet.data.classes import read_classes
from deeplab_resnet.data.datasets import VOC_PALETTE
from deeplab_resnet.data.images import open_image
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.palette import save_label_png

# Lossless formats only: a JPEG label has blended colours at every edge.
FOLDER_EXTENSIONS = (".png", ".bmp", ".ppm", ".tif", ".tiff")


def parse_args(argv):
    parser = ArgumentParser(
        description="Convert RGB-coloured VOC label images to palette PNGs (value = class index).")
    parser.add_argument("inputs", nargs="+",
                        help="label images, or folders of them (their .png/.bmp/.ppm/.tif files)")
    parser.add_argument("--output-dir", required=True,
                        help="where NAME.png palette labels are written")
    parser.add_argument("--classes", metavar="FILE", default=None,
                        help="classes file: one 'R G B name' line per class, in class order; "
                             "its colours are the classes' (default: VOC's colours)")
    parser.add_argument("--ignore-colour", type=colour, default=None, metavar="R,G,B",
                        help="the colour of unlabelled pixels, written as 255 (ignore); "
                             "default: VOC's (224,224,192) without --classes, none with it")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="VOC colours only: those of classes 0..N-1 (plus 255 = ignore) "
                             f"are accepted (default: {NUM_VOC_CLASSES})")
    args = parser.parse_args(argv)
    if args.num_classes is not None and args.classes is not None:
        parser.error("--num-classes is for VOC's colours; --classes gives the classes")
    if args.num_classes is not None and not 1 <= args.num_classes <= IGNORE_LABEL:
        parser.error(f"--num-classes must be 1..{IGNORE_LABEL}, got {args.num_classes}")
    return args


def colour(text):
    """argparse type of --ignore-colour: 'R,G,B' (each 0..255) -> (R, G, B)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise argparse.ArgumentTypeError(f"expected 'R,G,B', each 0..255, got '{text}'")
    return values


class Colours:
    """The colours accepted: {24-bit colour key: class index}, the class count, the palette
    the PNGs are written with, how the colours are named in messages, and whether they are
    a classes file's (`from_file`)."""

    def __init__(self, classes=None, num_classes=None, ignore_colour=None):
        if classes is None:
            count = NUM_VOC_CLASSES if num_classes is None else num_classes
            colours = [tuple(int(v) for v in VOC_PALETTE[i]) for i in range(count)]
            ignore = tuple(int(v) for v in VOC_PALETTE[IGNORE_LABEL])
            self.palette, self.what = VOC_PALETTE.copy(), "a VOC class colour"
            self.from_file = False
        else:
            self.from_file = True
            colours, ignore = list(classes.colours), None
            self.palette = classes.palette.copy()
            self.what = f"a colour of --classes {classes.path}"
        if ignore_colour is not None:
            ignore = ignore_colour
            self.what += f" or --ignore-colour {','.join(map(str, ignore_colour))}"
        if ignore in colours:
            raise DeepLabError(f"--ignore-colour {','.join(map(str, ignore))} is the colour of "
                               f"class {colours.index(ignore)}")
        self.num_classes = len(colours)
        self.table = {int(_key(c)): i for i, c in enumerate(colours)}
        if ignore is not None:
            self.table[int(_key(ignore))] = IGNORE_LABEL
            self.palette[IGNORE_LABEL] = ignore


def _key(rgb):
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def rgb_to_indices(rgb, table, path, what="a VOC class colour"):
    """HxWx3 uint8 colours -> HxW uint8 class indices; an unknown colour is a DeepLabError
    naming the file, the colour, one position and its pixel count (`what`: the colours
    accepted, in words)."""
    keys = _key(rgb)
    # Map the few distinct colours, not every pixel, through the table.
    colours, inverse = np.unique(keys, return_inverse=True)
    lookup = np.zeros(len(colours), dtype=np.uint8)
    for i, colour in enumerate(colours):
        index = table.get(int(colour))
        if index is None:
            ys, xs = np.nonzero(keys == colour)
            rgb_text = f"({colour >> 16 & 255}, {colour >> 8 & 255}, {colour & 255})"
            hint = (" (JPEG-compressed labels cannot be converted exactly)"
                    if path.lower().endswith((".jpg", ".jpeg")) else "")
            raise DeepLabError(f"{path}: colour {rgb_text} at pixel (row {ys[0]}, col {xs[0]}), "
                            f"{len(ys)} pixels, is not {what}{hint}")
        lookup[i] = index
    return lookup[inverse.reshape(keys.shape)]


def palette_agrees(image, colours):
    """Whether a palette image's colours are those of its indices' classes (then its values
    are the class indices; else it is a colour-coded mask saved with a palette of its own)."""
    values = np.flatnonzero(np.bincount(np.asarray(image).ravel(), minlength=256))
    own = np.asarray(image.getpalette() or [], np.uint8).reshape(-1, 3)
    if values.max(initial=0) >= len(own):
        return False
    return all(colours.table.get(int(_key(own[v]))) == v for v in values)


def convert(path, colours):
    """One label image -> (HxW uint8 indices, whether it was colour-coded), for the
    accepted `Colours`. With a classes file, a palette image is colour-coded unless its
    palette gives each index present its class's colour."""
    image = open_image(path)
    if image.mode == "P" and colours.from_file and not palette_agrees(image, colours):
        image = image.convert("RGB")
    if image.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        labels = read_label(path)
        check_label_values(labels, path, colours.num_classes)
        return labels, False
    if image.mode == "RGBA":
        alpha = np.asarray(image)[..., 3]
        if alpha.min() < 255:
            raise DeepLabError(f"{path}: has transparent pixels; a label image must be opaque")
        image = image.convert("RGB")
    if image.mode != "RGB":
        raise DeepLabError(f"{path}: image mode '{image.mode}' is neither RGB nor a palette "
                        "or grayscale label image")
    return rgb_to_indices(np.asarray(image), colours.table, path, colours.what), True


def collect_inputs(inputs):
    """Files as given, folders expanded to their lossless images, in sorted order."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(f for f in glob.glob(os.path.join(glob.escape(item), "*"))
                           if f.lower().endswith(FOLDER_EXTENSIONS) and os.path.isfile(f))
            if not found:
                raise DeepLabError(f"{item}: no label images in this folder "
                                f"({', '.join(FOLDER_EXTENSIONS)})")
            files.extend(found)
        elif os.path.exists(item):
            files.append(item)
        else:
            raise DeepLabError(f"{item}: no such file or folder")
    # Two inputs with the same name (a.png, a.bmp) would silently overwrite
    # each other's output.
    seen = {}
    for f in files:
        name = os.path.splitext(os.path.basename(f))[0]
        if name in seen and os.path.abspath(seen[name]) != os.path.abspath(f):
            raise DeepLabError(f"{f} and {seen[name]} would both be written as {name}.png")
        seen[name] = f
    # The same file given twice (as itself and via its folder) is converted once.
    return list(seen.values())


def main(argv=None):
    args = parse_args(argv)
    files = collect_inputs(args.inputs)
    classes = None if args.classes is None else read_classes(args.classes)
    colours = Colours(classes, args.num_classes, args.ignore_colour)
    with cli.new_folders_removed_on_failure(*missing_folders(args.output_dir)):
        output_dir = check_writable_dir(args.output_dir, "--output-dir")
        converted, copied = convert_all(files, colours, output_dir)
    print(f"{converted} RGB labels converted, {copied} already index labels copied "
          f"-> {output_dir}")
    return 0


def missing_folders(path):
    """`path` and those of its parent folders that do not exist yet, innermost first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def convert_all(files, colours, output_dir):
    """Converts `files` into a hidden folder inside `output_dir`, then moves them into it:
    a failure leaves nothing. Returns (colour-coded files converted, index labels copied)."""
    staging = tempfile.mkdtemp(prefix=".tmp-labels-", dir=output_dir)
    converted = copied = 0
    try:
        names = []
        for path in tqdm(files, desc="labels", unit="file", disable=None):
            labels, was_rgb = convert(path, colours)
            names.append(os.path.splitext(os.path.basename(path))[0] + ".png")
            save_label_png(labels, os.path.join(staging, names[-1]), colours.palette)
            converted, copied = converted + was_rgb, copied + (not was_rgb)
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return converted, copied


if __name__ == "__main__":
    run(main)
