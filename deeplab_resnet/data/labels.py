"""Label files: class-index PNGs decoded and checked, and why a file is not one."""

import numpy as np

from deeplab_resnet.data.images import open_image
from deeplab_resnet.errors import BadFileError


def read_label(path):
    """A label PNG -> HxW uint8 class indices.

    VOC labels are palette ('P') images whose pixel values are the class
    indices; the palette only colours them. Single-channel 8-bit images are
    read the same way, 16-bit ones when their values fit 0..255, and gray or
    palette images with alpha when every pixel is opaque. JPEGs are refused
    (lossy: their values are smeared at every edge), and so are colour images
    (decoding colours as classes gives wrong labels; `label_trouble` says why).
    """
    image = open_image(path)
    if image.format == "JPEG":
        raise BadFileError(label_trouble(path, image), path=path)
    if image.mode in ("LA", "PA"):
        # Gray or palette index plus alpha: the index is the class when every
        # pixel is opaque; transparent pixels have no clear meaning.
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min(initial=255) < 255:
            raise BadFileError(f"{path}: label image '{image.mode}' has transparent pixels, "
                               "whose class is unclear; save the class indices without alpha",
                               path=path)
        image = image.getchannel(0)
    if image.mode in ("P", "L", "1"):
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(image)
        if values.size and (values.max() > 255 or values.min() < 0):
            raise BadFileError(f"{path}: label values outside 0..255 (max {values.max()}) in a "
                               f"{image.mode} label image", path=path)
        return values.astype(np.uint8)
    raise BadFileError(label_trouble(path, image), path=path)


# More colours than this in a label's place: a photo, not a colour-coded label.
_LABEL_COLOURS = 256


_SWAPPED = "the list's columns may be swapped (each line is 'IMAGE_PATH LABEL_PATH')"


# How a colour-coded label becomes class indices: by the colours of its classes file.
_CONVERTER = ("the colours of its classes file ('classes': one 'R G B name' line per class, "
              "in class order)")


def label_trouble(path, image):
    """Why a decoded PIL `image` cannot be read as a label, most likely cause first.

    A JPEG is lossy: its values are smeared between classes at every edge. A
    colour image in the label column is most often the photo (the list's
    columns swapped); else a colour-coded label, which converts to class indices
    by the colours of its classes file (`deeplab_resnet.data.classes`).
    """
    colours = len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))
    photo = colours > _LABEL_COLOURS
    if image.format == "JPEG":
        swapped = f"; it has {colours} colours, like a photo: {_SWAPPED}" if photo else ""
        return (f"{path}: a JPEG given as a label: JPEG is lossy, so its class values are "
                "smeared (edge pixels get values between classes); labels must be lossless "
                f"PNGs of class indices{swapped}")
    if photo:
        return (f"{path}: label image is '{image.mode}' with {colours} colours, like a photo, "
                f"not class indices: {_SWAPPED} (a colour-coded label converts to class "
                f"indices by {_CONVERTER})")
    return (f"{path}: label image is '{image.mode}' ({colours} colours), not a palette or "
            f"grayscale PNG of class indices: if it is the photo, {_SWAPPED}; if it is a "
            f"colour-coded label, convert it to class indices first, by {_CONVERTER}")



def check_labels(labels, num_classes, ignore_label):
    """Raises ValueError when a label value is neither a class nor the ignore label.

    Args:
        labels: integer array of ground-truth labels.
        num_classes: number of classes; valid classes are 0..num_classes-1.
        ignore_label: the value of unscored pixels.
    """
    labels = np.asarray(labels)
    # The values present; for 8-bit labels (every PNG read) a histogram is faster than unique.
    values = (np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
              if labels.dtype == np.uint8 else np.unique(labels))
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if bad.size > 5 else "")
        raise ValueError(f"label values {shown} are neither a class (0..{num_classes - 1}) "
                         f"nor the ignore label {ignore_label}")
