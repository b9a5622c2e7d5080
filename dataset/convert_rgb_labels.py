"""Converts RGB-coloured VOC-style label images to palette PNGs of class indices.

Some tools save VOC labels as plain RGB images (each class drawn in its VOC
colour) instead of VOC's palette PNGs, whose pixel values are the class
indices. Training reads labels as indices, so such files are converted here:
each VOC colour becomes its index (e.g. (128, 0, 0) -> 1 aeroplane,
(224, 224, 192) -> 255 ignore); a colour that is not a class colour is an
error naming the file and the colour, never a silent guess.

Palette and grayscale images are already index labels; they are copied with
their values unchanged.

    python dataset/convert_rgb_labels.py my_rgb_labels/ --output-dir my_labels/
"""

import glob
import os

import numpy as np
from tqdm import tqdm

from _common import (ArgumentParser, IGNORE_LABEL, NUM_VOC_CLASSES, DeepLabError,
                     check_label_values, check_writable_dir, run)
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
    parser.add_argument("--num-classes", type=int, default=NUM_VOC_CLASSES,
                        help="colours of classes 0..N-1 (plus 255 = ignore) are accepted "
                             "(default: 21)")
    args = parser.parse_args(argv)
    if not 1 <= args.num_classes <= IGNORE_LABEL:
        parser.error(f"--num-classes must be 1..{IGNORE_LABEL}, got {args.num_classes}")
    return args


def color_table(num_classes):
    """{24-bit colour key: class index} for the accepted VOC colours."""
    indices = list(range(num_classes)) + [IGNORE_LABEL]
    return {_key(VOC_PALETTE[i]): i for i in indices}


def _key(rgb):
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def rgb_to_indices(rgb, table, path):
    """HxWx3 uint8 colours -> HxW uint8 class indices; an unknown colour is a DeepLabError."""
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
                            f"{len(ys)} pixels, is not a VOC class colour{hint}")
        lookup[i] = index
    return lookup[inverse.reshape(keys.shape)]


def convert(path, table, num_classes):
    """One label image -> (HxW uint8 indices, whether it was colour-coded)."""
    image = open_image(path)
    if image.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        labels = read_label(path)
        check_label_values(labels, path, num_classes)
        return labels, False
    if image.mode == "RGBA":
        alpha = np.asarray(image)[..., 3]
        if alpha.min() < 255:
            raise DeepLabError(f"{path}: has transparent pixels; a label image must be opaque")
        image = image.convert("RGB")
    if image.mode != "RGB":
        raise DeepLabError(f"{path}: image mode '{image.mode}' is neither RGB nor a palette "
                        "or grayscale label image")
    return rgb_to_indices(np.asarray(image), table, path), True


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
    output_dir = check_writable_dir(args.output_dir, "--output-dir")
    table = color_table(args.num_classes)
    converted = copied = 0
    for path in tqdm(files, desc="labels", unit="file", disable=None):
        labels, was_rgb = convert(path, table, args.num_classes)
        name = os.path.splitext(os.path.basename(path))[0]
        save_label_png(labels, os.path.join(output_dir, name + ".png"))
        if was_rgb:
            converted += 1
        else:
            copied += 1
    print(f"{converted} RGB labels converted, {copied} already index labels copied "
          f"-> {output_dir}")
    return 0


if __name__ == "__main__":
    run(main)
