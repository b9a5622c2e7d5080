"""Image files: decoding any image to RGB (size-checked first, turned upright by its EXIF
orientation), finding the images of a folder."""

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deeplab_resnet.errors import BadFileError, DeepLabError


def check_distinct_stems(paths, output="{stem}.png"):
    """A DeepLabError when two images would write the same output file (same name, other folder)."""
    seen = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in seen:
            raise DeepLabError(f"{path} and {seen[stem]} would write the same outputs "
                               f"({output.format(stem=stem)})")
        seen[stem] = path


# Images with more pixels are refused before they are decoded (PIL's own
# decompression-bomb limit, 0.09 gigapixels, e.g. 9459 x 9459).
MAX_IMAGE_PIXELS = 89_478_485


def open_image(path):
    """Opens and decodes an image file; a missing, empty, non-image or oversized file
    (more than MAX_IMAGE_PIXELS by its header) is a BadFileError naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(f"{width}x{height}")
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadFileError(f"{path}: image too large (its header claims more than "
                           f"{MAX_IMAGE_PIXELS} pixels); refused before decoding",
                           path=path) from None
    except FileNotFoundError:
        raise BadFileError(f"{path}: no such file", path=path) from None
    except IsADirectoryError:
        raise BadFileError(f"{path}: is a folder, not an image", path=path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        empty = os.path.exists(path) and os.path.getsize(path) == 0
        reason = "empty file" if empty else "not an image"
        raise BadFileError(f"{path}: {reason} ({type(exc).__name__})", path=path) from None
    return image


# The EXIF tag of how the stored pixels are turned for display (1: as stored; 2..8:
# mirrored and/or rotated; 5..8 swap width and height).
ORIENTATION_TAG = 0x0112


def exif_orientation(image):
    """The EXIF orientation (1..8) of a PIL image; 1 (as stored) when it has none or a
    value outside 1..8."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 (a damaged EXIF block: PIL trips on it in many ways)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def file_orientation(path):
    """The EXIF orientation of an image file, from its header (1 when it has none, or
    cannot be read: the decoder names such a file)."""
    try:
        with Image.open(path) as image:
            return exif_orientation(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 1


def upright(image):
    """A PIL image as viewers show it: its EXIF orientation applied (the same image when
    there is none)."""
    return ImageOps.exif_transpose(image) if exif_orientation(image) != 1 else image


def to_rgb(image):
    """A PIL image of any mode (grayscale, CMYK, RGBA, palette, ...) -> HxWx3 uint8 RGB in
    the orientation viewers show (EXIF applied), converted as the commands convert the
    images they read."""
    return np.asarray(upright(image).convert("RGB"))


def size_mismatch(label_path, label_shape, image_path, image_shape):
    """The message of a label whose HxW differs from its image's (as shown): when the image
    is stored in the label's size but shown rotated (EXIF orientation 5..8), it says so."""
    message = (f"{label_path}: label is {label_shape[1]}x{label_shape[0]} but image "
               f"{image_path} is {image_shape[1]}x{image_shape[0]} (width x height)")
    orientation = file_orientation(image_path)
    if orientation >= 5 and tuple(image_shape[:2][::-1]) == tuple(label_shape[:2]):
        message += (f" as displayed: its EXIF orientation {orientation} turns its stored "
                    f"{image_shape[0]}x{image_shape[1]}, the label's size, by 90 degrees "
                    "(images are read as viewers show them, labels as stored: save the label "
                    "in the image's displayed orientation)")
    return message


def read_image(path):
    """Any image file (grayscale, RGBA, palette, ...) -> HxWx3 uint8 RGB (`to_rgb`)."""
    return to_rgb(open_image(path))


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".webp")


def list_images(folder):
    """Sorted paths of the files in `folder` whose extension is an image format's."""
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(folder, n)))
    return [os.path.join(folder, n) for n in names]



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
    paths = list_images(path)
    if not paths:
        raise BadFileError(f"{path}: folder holds no image files "
                           f"({', '.join(IMAGE_EXTENSIONS)})", path=path)
    check_distinct_stems(paths, "{stem}_mask.png")
    return paths
