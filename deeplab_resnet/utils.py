"""Label palettes, image and label file IO, atomic writes."""

import codecs
import contextlib
import os
import tempfile
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from deeplab_resnet.errors import SettingError, DeepLabError

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def voc_colormap(n=256):
    """PASCAL VOC colour map: the bits of the index spread over R, G, B from the top bit down."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_PALETTE = voc_colormap()


def class_names(num_classes, names=None):
    """Names of the classes: `names` (checked), else VOC's for 21 classes, else `class_<i>`.

    Args:
        num_classes: the model's class count.
        names: the user's names, or None.
    """
    if names is not None:
        if len(names) != num_classes:
            raise SettingError(f"{{class_names}} gives {len(names)} names for a model with "
                               f"{num_classes} classes", "class_names")
        return list(names)
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


def colorize(labels):
    """HxW class indices -> HxWx3 uint8 VOC colours."""
    return VOC_PALETTE[np.asarray(labels, dtype=np.uint8)]


def current_umask():
    """The process umask (read by setting it, so set back at once; Python has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(path):
    """Gives a temporary file or folder the mode a plain open()/mkdir() would: 0666/0777 & ~umask.

    mkstemp and mkdtemp create 0600 and 0700 whatever the umask, and the mode
    survives the rename into place.
    """
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renamed onto it only if the block succeeds."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    except OSError as exc:
        raise DeepLabError(f"{folder}: cannot write here ({exc.strerror})") from None
    os.close(fd)
    try:
        plain_mode(tmp)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        # Name the file the user asked for, not the temporary one (e.g. disk full).
        raise OSError(exc.errno, exc.strerror or str(exc), path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_label_png(labels, path):
    """Writes class indices as a palette PNG (VOC colours, pixel value = class index)."""
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(VOC_PALETTE.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_rgb_png(rgb, path):
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp, format="PNG")


def save_npy(array, path):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


def save_npz(arrays, path):
    """Writes {name: array} as a plain .npz (no pickle), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


# The VOC test server's layout of a submission ("comp6": trained on any data), under its root.
VOC_SUBMISSION_FOLDER = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")


def voc_submission_folder(root, num_classes):
    """Where the VOC test server wants the predicted palette PNGs, under `root`.

    Raises:
        SettingError for a model that does not have VOC's 21 classes.
    """
    if num_classes != len(VOC_CLASSES):
        raise SettingError(f"{{voc_submission}}: the VOC test server scores VOC's "
                           f"{len(VOC_CLASSES)} classes; this model has {num_classes}",
                           "voc_submission")
    return os.path.join(root, VOC_SUBMISSION_FOLDER)


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
    (more than MAX_IMAGE_PIXELS by its header) is a DeepLabError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(f"{width}x{height}")
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DeepLabError(f"{path}: image too large (its header claims more than "
                        f"{MAX_IMAGE_PIXELS} pixels); refused before decoding") from None
    except FileNotFoundError:
        raise DeepLabError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DeepLabError(f"{path}: is a folder, not an image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        empty = os.path.exists(path) and os.path.getsize(path) == 0
        reason = "empty file" if empty else "not an image"
        raise DeepLabError(f"{path}: {reason} ({type(exc).__name__})") from None
    return image


def to_rgb(image):
    """A PIL image of any mode (grayscale, CMYK, RGBA, palette, ...) -> HxWx3 uint8 RGB,
    converted as the commands convert the images they read."""
    return np.asarray(image.convert("RGB"))


def read_image(path):
    """Any image file (grayscale, RGBA, palette, ...) -> HxWx3 uint8 RGB (`to_rgb`)."""
    return to_rgb(open_image(path))


def read_label(path):
    """A label PNG -> HxW uint8 class indices.

    VOC labels are palette ('P') images whose pixel values are the class
    indices; the palette only colours them. Single-channel 8-bit images are
    read the same way, 16-bit ones when their values fit 0..255, and gray or
    palette images with alpha when every pixel is opaque. RGB-coloured labels
    are refused: decoding colours as classes gives wrong labels.
    """
    image = open_image(path)
    if image.mode in ("LA", "PA"):
        # Gray or palette index plus alpha: the index is the class when every
        # pixel is opaque; transparent pixels have no clear meaning.
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min(initial=255) < 255:
            raise DeepLabError(f"{path}: label image '{image.mode}' has transparent pixels, whose "
                            "class is unclear; save the class indices without alpha")
        image = image.getchannel(0)
    if image.mode in ("P", "L", "1"):
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(image)
        if values.size and (values.max() > 255 or values.min() < 0):
            raise DeepLabError(f"{path}: label values outside 0..255 (max {values.max()}) in a "
                            f"{image.mode} label image")
        return values.astype(np.uint8)
    raise DeepLabError(f"{path}: label image is '{image.mode}', not a palette or grayscale PNG of "
                    "class indices; convert it first (python dataset/convert_rgb_labels.py)")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".webp")


def list_images(folder):
    """Sorted paths of the files in `folder` whose extension is an image format's."""
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(IMAGE_EXTENSIONS)
                   and os.path.isfile(os.path.join(folder, n)))
    return [os.path.join(folder, n) for n in names]


def overlay(image, labels, alpha=0.5):
    """HxWx3 uint8: the VOC colours of `labels` blended over an RGB image.

    Args:
        image: HxWx3 uint8 RGB.
        labels: HxW class indices.
        alpha: weight of the label colours (0 = image only, 1 = colours only).
    """
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(labels).astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def data_path(data_dir, path):
    """VOC lists start paths with '/', meaning relative to the data folder."""
    if data_dir is None:
        return path
    return os.path.join(data_dir, path.lstrip("/"))


def _decode_list(data, source):
    """A list file's text: UTF-8 (a byte-order mark is dropped), or UTF-16 when it
    starts with a UTF-16 byte-order mark. Other encodings are refused, naming the line:
    guessing an encoding could turn file names into other, wrong ones."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise SettingError(f"{{data_list}} {source}: not valid UTF-16 text despite its "
                               "UTF-16 byte-order mark", "data_list") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DeepLabError(f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                        "save the list as UTF-8") from None


def read_list(data_dir, data_list, with_labels=True):
    """Parses and checks a list file.

    Args:
        data_dir: folder the listed paths are relative to (None: as written).
        data_list: list file, one 'IMAGE_PATH LABEL_PATH' per line (or just
            'IMAGE_PATH' when `with_labels` is False); blank lines are skipped.
        with_labels: True: each line must name a label file; False: labels
            are optional, but every line names one or none does (a test set).
    Returns:
        (image paths, label paths) as lists of strings; label paths is empty
        for a list without labels.
    Raises:
        DeepLabError naming the list file and line for an unreadable list, a
        malformed line (or, without `with_labels`, a line unlike the first),
        a missing file or an empty list.
    """
    if data_list is None:
        raise SettingError("{data_list} is required", "data_list")
    if data_dir is not None and not os.path.isdir(data_dir):
        raise SettingError(f"{{data_dir}} {data_dir}: no such folder", "data_dir")
    try:
        with open(data_list, "rb") as f:
            lines = _decode_list(f.read(), data_list).splitlines()
    except FileNotFoundError:
        raise SettingError(f"{{data_list}} {data_list}: no such file", "data_list") from None
    except OSError as exc:
        raise SettingError(f"{{data_list}} {data_list}: cannot read ({exc.strerror or exc})",
                           "data_list") from None
    allowed, form = ((2,), "'IMAGE_PATH LABEL_PATH'") if with_labels else \
        ((1, 2), "'IMAGE_PATH [LABEL_PATH]'")
    images, labels = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in allowed:
            raise DeepLabError(f"{data_list}:{number}: expected {form}, got '{line.strip()}'")
        if images and (len(fields) == 2) != bool(labels):
            raise DeepLabError(f"{data_list}:{number}: "
                            f"{'names a label' if labels == [] else 'names no label'} unlike "
                            "the lines before it: every line names a label file or none does")
        paths = [data_path(data_dir, p) for p in fields]
        for path in paths:
            if not os.path.isfile(path):
                raise DeepLabError(f"{data_list}:{number}: {path}: no such file")
        images.append(paths[0])
        labels.extend(paths[1:])
    if not images:
        raise SettingError(f"{{data_list}} {data_list}: the list is empty", "data_list")
    return images, labels


def writable_dir(path, field):
    """Creates folder `path` if needed and returns it; an error naming the setting `field`
    (e.g. "snapshot_dir") if it cannot be created or written."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise SettingError(f"{{{field}}} {path}: cannot create folder ({exc.strerror})",
                           field) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingError(f"{{{field}}} {path}: folder is not writable", field)
    return path
