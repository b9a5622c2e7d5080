"""Inference over files: which images to segment (a file, or the images of a folder)."""

import os

from deeplab_resnet import utils
from deeplab_resnet.errors import DeepLabError


def image_paths(path):
    """The images to segment: `path` itself, or the image files of a folder."""
    if not os.path.exists(path):
        raise DeepLabError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        return [path]
    paths = utils.list_images(path)
    if not paths:
        raise DeepLabError(f"{path}: folder holds no image files "
                        f"({', '.join(utils.IMAGE_EXTENSIONS)})")
    utils.check_distinct_stems(paths, "{stem}_mask.png")
    return paths
