"""Evaluation: predict every image of a list, count one confusion matrix, report."""

import os
import sys

import numpy as np
from tqdm import tqdm

from deeplab_resnet import defaults, metrics, utils
from deeplab_resnet.errors import DeepLabError


def evaluate(predictor, pairs, num_classes, ignore_label=defaults.IGNORE_LABEL, save_dirs=(),
             palette=None):
    """Predicts every listed image and sums the confusion matrix.

    Args:
        predictor: a `predict.Predictor`.
        pairs: [(image path, label path or None)]; an image without a label
            is predicted (and saved) but not counted.
        num_classes: number of classes of the model.
        ignore_label: label value that is not scored.
        save_dirs: folders that each get the predicted labels as <stem>.png.
        palette: 256x3 uint8 colours of those PNGs (default VOC's; see `datasets.classes`).
    Returns:
        (num_classes, num_classes) int64 confusion matrix [true, predicted].
    """
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    # The bar is drawn on a terminal only: piped stderr keeps just the messages.
    for image_path, label_path in tqdm(pairs, desc="evaluate", unit="img", file=sys.stderr,
                                       dynamic_ncols=True, disable=None):
        image = utils.read_image(image_path)
        label = None if label_path is None else utils.read_label(label_path)
        if label is not None:
            if label.shape != image.shape[:2]:
                raise DeepLabError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but "
                                f"image {image_path} is {image.shape[1]}x{image.shape[0]}")
            try:
                metrics.check_labels(label, num_classes, ignore_label)
            except ValueError as exc:
                raise DeepLabError(f"{label_path}: {exc}") from None
        prediction = predictor(image)
        if label is not None:
            confusion += metrics.confusion_matrix(label, prediction.labels, num_classes,
                                                  ignore_label)
        stem = os.path.splitext(os.path.basename(image_path))[0]
        for folder in save_dirs:
            utils.save_label_png(prediction.labels, os.path.join(folder, stem + ".png"), palette)
    return confusion


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"


def report(result):
    """The printed report; its last line is `Mean IoU: ...`."""
    width = max(len(name) for name in result["per_class_iou"])
    lines = ["Per-class IoU:"]
    for name, iou in result["per_class_iou"].items():
        lines.append(f"  {name:<{width}}  {_fmt(iou)}" + ("  (absent)" if iou is None else ""))
    lines += [f"Pixel accuracy: {_fmt(result['pixel_accuracy'])}",
              f"Mean class accuracy: {_fmt(result['mean_class_accuracy'])}",
              f"Frequency-weighted IoU: {_fmt(result['frequency_weighted_iou'])}",
              f"Mean IoU: {_fmt(result['mean_iou'])}"]
    return "\n".join(lines)
