"""Class weights of the loss (`TrainConfig.class_weights`): from a file, or median-frequency
balancing of the training labels ("auto").

Median-frequency balancing (Eigen & Fergus, 2015): the frequency of class c is its
pixels over the pixels of the label images in which c appears; its weight is the
median of the frequencies over the classes present divided by its own. A class that
appears in no label gets weight 1 (it has no pixels to weight). Counted once, before
the first update, over the labels as stored (ignore-label pixels left out); the
weights are recorded in the run record (`class_weights_computed`), so that a resumed
run uses the very same weights without counting again.
"""

import logging
import math
import time

import numpy as np

from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.lists import read_list
from deeplab_resnet.errors import BadFileError, SettingError

log = logging.getLogger(__name__)
AUTO = "auto"
# Lists of at least this many labels say that they are being counted, and how far it got.
LARGE_LIST = 500
PROGRESS_SECONDS = 30.0


def check_setting(value):
    """The `class_weights` setting as kept in a `TrainConfig`: None, "auto", a file path, or a
    tuple of weights (each finite and >= 0, at least one > 0).

    Raises:
        SettingError naming `class_weights`.
    """
    if value is None or isinstance(value, str):
        if isinstance(value, str) and not value:
            raise SettingError("{class_weights} must be 'auto' or a file of weights, got ''",
                               "class_weights")
        return value
    try:
        weights = tuple(float(w) for w in value)
    except (TypeError, ValueError):
        raise SettingError(f"{{class_weights}} must be 'auto', a file of weights or a sequence "
                           f"of numbers, got {value!r}", "class_weights") from None
    _check_values(weights, "{class_weights}", ("class_weights",))
    return weights


def _check_values(weights, where, fields, path=None):
    bad = [w for w in weights if not (math.isfinite(w) and w >= 0)]
    if bad:
        raise SettingError(f"{where}: a class weight must be a number >= 0, got {bad[0]!r}",
                           *fields, path=path)
    if weights and not any(weights):
        raise SettingError(f"{where}: every class weight is 0, nothing would be learned",
                           *fields, path=path)


def read_file(path):
    """The weights of a file: one number per line in class order; blank lines and text after
    `#` ignored.

    Raises:
        BadFileError naming the file (and line) when it is missing, unreadable, or holds
        something other than one number >= 0 per line.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise SettingError(f"{{class_weights}} {path}: no such file", "class_weights",
                           path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadFileError(f"{path}: cannot read class weights ({exc})", path=path) from None
    weights = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            weight = float(text)
        except ValueError:
            raise BadFileError(f"{path}: line {number}: expected one class weight (a number), "
                               f"got {text!r}", path=path) from None
        if not (math.isfinite(weight) and weight >= 0):
            raise BadFileError(f"{path}: line {number}: a class weight must be a number >= 0, "
                               f"got {text!r}", path=path)
        weights.append(weight)
    if not weights:
        raise BadFileError(f"{path}: holds no class weights (one number per line, in class "
                           "order)", path=path)
    if not any(weights):
        raise BadFileError(f"{path}: every class weight is 0, nothing would be learned",
                           path=path)
    return tuple(weights)


def recorded(value):
    """What the run record holds for the setting: None, "auto" or the list of weights given
    (read from the file), so that a changed file is another run."""
    if value is None or value == AUTO:
        return value
    return list(read_file(value) if isinstance(value, str) else value)


def pixel_counts(data_dir, data_list, num_classes, ignore_label, clock=time.monotonic):
    """(pixels of each class, pixels of the label images each class appears in) over the
    labels of a list, as two int64 arrays of `num_classes`."""
    _, labels = read_list(data_dir, data_list)
    pixels = np.zeros(num_classes, np.int64)
    present_in = np.zeros(num_classes, np.int64)
    large = len(labels) >= LARGE_LIST
    if large:
        log.info(f"class weights: counting the classes of {len(labels)} labels "
                 f"({data_list})", extra={"progress": True})
    last = clock()
    for done, path in enumerate(labels, 1):
        label = read_label(path)
        counts = np.bincount(label[label != ignore_label].ravel(), minlength=256)
        if counts[num_classes:].any():
            value = int(np.flatnonzero(counts[num_classes:])[0]) + num_classes
            raise BadFileError(f"{path}: label value {value} is neither a class (0..."
                               f"{num_classes - 1}) nor the ignore label {ignore_label}",
                               path=path)
        counts = counts[:num_classes]
        pixels += counts
        present_in += np.where(counts > 0, label.size, 0)
        if large and clock() - last >= PROGRESS_SECONDS:
            last = clock()
            log.info(f"class weights: {done}/{len(labels)} labels counted",
                     extra={"progress": True})
    return pixels, present_in


def median_frequency(pixels, present_in):
    """Median-frequency weights of `pixel_counts`' arrays (1 for a class never present)."""
    present = pixels > 0
    if not present.any():
        return tuple(1.0 for _ in pixels)
    frequency = np.where(present, pixels / np.maximum(present_in, 1), 0.0)
    median = float(np.median(frequency[present]))
    return tuple(float(median / f) if f > 0 else 1.0 for f in frequency)


def resolve(config, record, num_classes):
    """(the record to save, the weights to train with or None) for a run of `num_classes`.

    "auto" counts the training labels unless the record (of the run being resumed)
    already holds the weights computed then.

    Raises:
        SettingError naming `class_weights` when the count of given weights is not the
        model's class count; BadFileError for a bad file or label.
    """
    setting = record.get("class_weights")
    if setting is None:
        return record, None
    if setting != AUTO:
        if len(setting) != num_classes:
            source = config.class_weights if isinstance(config.class_weights, str) else "given"
            raise SettingError(f"{{class_weights}} {source}: {len(setting)} weights, but the "
                               f"model has {num_classes} classes (one weight per class, in "
                               "class order)", "class_weights",
                               path=source if source != "given" else None)
        return record, tuple(setting)
    computed = record.get("class_weights_computed")
    if computed is None or len(computed) != num_classes:
        computed = list(median_frequency(*pixel_counts(
            config.data_dir, config.data_list, num_classes, config.ignore_label)))
        record = dict(record, class_weights_computed=computed)
        log.info("class weights (median frequency): "
                 + " ".join(f"{w:.3g}" for w in computed), extra={"progress": True})
    return record, tuple(computed)
