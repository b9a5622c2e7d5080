"""Colours for labels: class indices -> colours, overlays, palette PNGs (and RGB PNGs of them)."""

import numpy as np
from PIL import Image

from deeplab_resnet.data.datasets import VOC_PALETTE
from deeplab_resnet.files import atomic_path


def colorize(labels, palette=None):
    """HxW class indices -> HxWx3 uint8 colours (`palette`, 256x3; default VOC's)."""
    palette = VOC_PALETTE if palette is None else palette
    return palette[np.asarray(labels, dtype=np.uint8)]


def save_label_png(labels, path, palette=None):
    """Writes class indices as a palette PNG (pixel value = class index), coloured by
    `palette` (256x3, see `datasets.classes`; default VOC's)."""
    palette = VOC_PALETTE if palette is None else palette
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(np.asarray(palette, dtype=np.uint8).reshape(-1).tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_rgb_png(rgb, path):
    """Writes an HxWx3 uint8 picture (an overlay, a figure) as an RGB PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")


def overlay(image, labels, alpha=0.5, palette=None):
    """HxWx3 uint8: the colours of `labels` blended over an RGB image.

    Args:
        image: HxWx3 uint8 RGB.
        labels: HxW class indices.
        alpha: weight of the label colours (0 = image only, 1 = colours only).
        palette: 256x3 uint8 colours (default VOC's).
    """
    colours = colorize(labels, palette).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
