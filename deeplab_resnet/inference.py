"""Inference over files: which images to segment (a file, or the images of a folder)."""

import os

from deeplab_resnet import utils
from deeplab_resnet.errors import BadFileError


def image_paths(path):
    """The images to segment: `path` itself, or the image files of a folder (sorted).

    Raises:
        BadFileError when `path` is missing or a folder without image files;
        DeepLabError when two images would write the same outputs.
    """
    if not os.path.exists(path):
        raise BadFileError(f"{path}: no such file or folder", path=path)
    if not os.path.isdir(path):
        return [path]
    paths = utils.list_images(path)
    if not paths:
        raise BadFileError(f"{path}: folder holds no image files "
                           f"({', '.join(utils.IMAGE_EXTENSIONS)})", path=path)
    utils.check_distinct_stems(paths, "{stem}_mask.png")
    return paths
