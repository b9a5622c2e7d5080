"""Helpers shared by the dataset preparation scripts in this folder.

The scripts are standalone tools (`python dataset/convert_sbd.py ...`) over the
installed package (`pip install -e .`): they need numpy, Pillow and scipy but
not TensorFlow.
"""

import functools
import os

from deeplab_resnet import cli, defaults
from deeplab_resnet.cli import ArgumentParser, check_writable_dir  # noqa: F401 (re-exported)
from deeplab_resnet.data.labels import check_labels
from deeplab_resnet.errors import BadFileError, DeepLabError
from deeplab_resnet.files import atomic_path

DATASET_DIR = os.path.dirname(os.path.abspath(__file__))
NUM_VOC_CLASSES = defaults.NUM_CLASSES
IGNORE_LABEL = defaults.IGNORE_LABEL
# The tools never touch TensorFlow: start without loading it.
run = functools.partial(cli.run, tensorflow=False)


def resolve_voc_root(path, flag="--voc-root"):
    """The VOC2012 folder (holding JPEGImages/, ImageSets/); VOCdevkit/ above it is accepted too."""
    if not os.path.isdir(path):
        raise DeepLabError(f"{flag} {path}: no such folder")
    for candidate in (path, os.path.join(path, "VOC2012")):
        if os.path.isdir(os.path.join(candidate, "ImageSets")) or \
                os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise DeepLabError(f"{flag} {path}: not a VOC2012 folder (no ImageSets/ or JPEGImages/ in it; "
                    "pass VOCdevkit/VOC2012)")


def resolve_sbd_root(path, flag="--sbd-root"):
    """SBD's `benchmark_RELEASE/dataset` folder (holding cls/, img/, train.txt, val.txt).

    The `benchmark_RELEASE` folder above it is accepted too, since that is what
    the archive unpacks to and users often pass it.
    """
    if not os.path.isdir(path):
        raise DeepLabError(f"{flag} {path}: no such folder")
    for candidate in (path, os.path.join(path, "dataset")):
        if os.path.isdir(os.path.join(candidate, "cls")) or \
                os.path.isfile(os.path.join(candidate, "train.txt")):
            return candidate
    raise DeepLabError(f"{flag} {path}: not an SBD dataset folder (no cls/ or train.txt in it; "
                    "pass benchmark_RELEASE/dataset)")


def read_names(path, what):
    """Image names from an ImageSets-style list: one name per line, blank lines skipped.

    Returns them in file order; a line with more than one field (e.g. VOC's
    per-class lists `NAME  1`) is refused, since it means the wrong file.
    """
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is dropped
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DeepLabError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise DeepLabError(f"{what} {path}: is a folder, not a list file") from None
    except UnicodeDecodeError:
        raise DeepLabError(f"{what} {path}: not a text file") from None
    names = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 1 or "/" in fields[0]:
            raise DeepLabError(f"{what} {path}:{number}: expected one image name per line, "
                            f"got '{line.strip()}'")
        names.append(fields[0])
    if not names:
        raise DeepLabError(f"{what} {path}: no image names in it")
    return names


def write_text(path, text):
    """Writes a text file atomically: a crash never leaves a half-written list behind."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)


def check_label_values(labels, path, num_classes):
    """Refuses label values that are neither a class index nor the ignore label, naming `path`
    (the library's rule, `deeplab_resnet.data.labels.check_labels`)."""
    try:
        check_labels(labels, num_classes, IGNORE_LABEL)
    except ValueError as exc:
        raise BadFileError(f"{path}: {exc}", path=path) from None
