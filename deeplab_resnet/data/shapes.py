"""A small synthetic segmentation dataset in PASCAL VOC layout, for tests and demos.

Each image shows a textured background with one to three filled shapes
(square, disc, triangle). Every class has its own colour family, so a tiny
network learns it in a few hundred steps on a CPU. The layout is VOC's:

    ROOT/JPEGImages/shape_0000.jpg        RGB JPEG
    ROOT/SegmentationClass/shape_0000.png palette PNG, pixel value = class index,
                                          255 on a band around each shape (as VOC
                                          marks object borders)
    ROOT/train.txt, ROOT/val.txt          '/JPEGImages/X.jpg /SegmentationClass/X.png'

Everything is a deterministic function of the seed.
"""

import os

import numpy as np
from PIL import Image
from scipy import ndimage

from deeplab_resnet.data.palette import save_label_png
from deeplab_resnet.files import atomic_path
from deeplab_resnet import defaults

CLASSES = ("background", "square", "disc", "triangle")
# Mean colour of each shape class (RGB); the background is drawn from grey tones.
_COLOURS = {1: (220, 40, 40), 2: (40, 200, 60), 3: (50, 70, 230)}


def _shape_mask(kind, h, w, rng):
    """Boolean HxW mask of one shape of class `kind` at a random place and size."""
    size = rng.uniform(0.25, 0.5) * min(h, w)
    cy, cx = rng.uniform(size / 2, h - size / 2), rng.uniform(size / 2, w - size / 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 1:
        return (np.abs(yy - cy) <= size / 2) & (np.abs(xx - cx) <= size / 2)
    if kind == 2:
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= (size / 2) ** 2
    # Upright triangle: below the apex, inside both slanted edges.
    top, bottom = cy - size / 2, cy + size / 2
    half_width = (yy - top) / size * (size / 2)
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)


def make_sample(rng, height, width, num_shapes):
    """One (RGB uint8 image, uint8 label) pair drawn from `rng`."""
    grey = rng.uniform(90, 160)
    image = grey + rng.normal(0, 12, (height, width, 1)) + rng.normal(0, 6, (height, width, 3))
    label = np.zeros((height, width), np.uint8)
    border = np.zeros((height, width), bool)
    for _ in range(num_shapes):
        kind = int(rng.integers(1, len(CLASSES)))
        mask = _shape_mask(kind, height, width, rng)
        if not mask.any():
            continue
        colour = np.array(_COLOURS[kind], np.float32) + rng.normal(0, 15, 3)
        image[mask] = colour + rng.normal(0, 10, (int(mask.sum()), 3))
        label[mask] = kind
        # Later shapes cover earlier ones; so does their border band.
        band = ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)
        border[mask] = False
        border |= band
    label[border] = defaults.IGNORE_LABEL
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_shapes_dataset(root, num_train=48, num_val=16, size=(72, 96), seed=0):
    """Writes the dataset under `root` and returns the paths of its list files.

    Args:
        root: output folder (created).
        num_train, num_val: number of images in train.txt and val.txt.
        size: (min, max) of the image height and width, drawn per image, so
            that crops, padding and scaling all occur.
        seed: the seed every pixel is derived from.
    Returns:
        {"root": root, "train": path of train.txt, "val": path of val.txt}.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "SegmentationClass"), exist_ok=True)
    lists = {"train": [], "val": []}
    for index in range(num_train + num_val):
        split = "train" if index < num_train else "val"
        h, w = (int(v) for v in rng.integers(size[0], size[1] + 1, 2))
        image, label = make_sample(rng, h, w, int(rng.integers(1, 4)))
        name = f"shape_{index:04d}"
        with atomic_path(os.path.join(root, "JPEGImages", name + ".jpg")) as tmp:
            Image.fromarray(image).save(tmp, format="JPEG", quality=95)
        save_label_png(label, os.path.join(root, "SegmentationClass", name + ".png"))
        lists[split].append(f"/JPEGImages/{name}.jpg /SegmentationClass/{name}.png\n")
    paths = {"root": str(root)}
    for split, lines in lists.items():
        paths[split] = os.path.join(root, f"{split}.txt")
        with atomic_path(paths[split]) as tmp:
            with open(tmp, "w") as f:
                f.writelines(lines)
    return paths
