"""Segmentation scores from one confusion matrix.

The confusion matrix is counted once, here, with numpy's bincount; every score
(per-class IoU, mean IoU, pixel accuracy, mean class accuracy, frequency
weighted IoU) is derived from it. Rows are ground-truth classes, columns
predicted classes.
"""

import numpy as np

from deeplab_resnet import defaults
from deeplab_resnet.data.labels import check_labels


def confusion_matrix(labels, predictions, num_classes, ignore_label=defaults.IGNORE_LABEL):
    """Counts (ground truth, prediction) pairs over the pixels not ignored.

    Args:
        labels: integer array of ground-truth labels (any shape).
        predictions: integer array of predicted classes, same shape.
        num_classes: number of classes.
        ignore_label: ground-truth value whose pixels are not counted.
    Returns:
        (num_classes, num_classes) int64 matrix, [true class, predicted class].
    Raises:
        ValueError: a label value that is neither a class nor `ignore_label`
            (`check_labels`), a predicted value that is not a class, or arrays
            of different sizes.
    """
    check_labels(labels, num_classes, ignore_label)
    return count_checked(labels, predictions, num_classes, ignore_label)


def count_checked(labels, predictions, num_classes, ignore_label=defaults.IGNORE_LABEL):
    """`confusion_matrix` of labels already checked with `check_labels` (as evaluation
    checks each label once, when it is read)."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.size} labels but {predictions.size} predictions")
    if predictions.size and (predictions.min() < 0 or predictions.max() >= num_classes):
        raise ValueError(f"predicted classes must lie in 0..{num_classes - 1}")
    keep = labels != ignore_label
    counts = np.bincount(labels[keep] * num_classes + predictions[keep],
                         minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _ratio(numerator, denominator):
    """numerator / denominator elementwise, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def scores(confusion, class_names=None):
    """All scores of a confusion matrix.

    A class that appears neither in the ground truth nor in the predictions
    has no IoU (None); mean IoU averages the classes that have one.

    Args:
        confusion: (C, C) matrix from `confusion_matrix` (summed over images).
        class_names: C names (default class_<i>).
    Returns:
        dict with `per_class_iou` ({name: IoU or None}), `per_class_accuracy`
        ({name: recall or None}), `mean_iou`, `pixel_accuracy`,
        `mean_class_accuracy`, `frequency_weighted_iou` (None when no pixel
        was scored) and `num_pixels`.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    num_classes = confusion.shape[0]
    names = (list(class_names) if class_names is not None
             else [f"class_{i}" for i in range(num_classes)])
    true_positives = np.diag(confusion)
    label_count = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    total = int(confusion.sum())
    iou = _ratio(true_positives, label_count + predicted_count - true_positives)
    accuracy = _ratio(true_positives, label_count)
    frequency = label_count / total if total else np.zeros(num_classes)
    present = label_count > 0

    def number(value):
        return None if value is None or np.isnan(value) else float(value)

    return {
        "per_class_iou": {n: number(v) for n, v in zip(names, iou)},
        "per_class_accuracy": {n: number(v) for n, v in zip(names, accuracy)},
        "mean_iou": number(np.nanmean(iou)) if np.any(~np.isnan(iou)) else None,
        "pixel_accuracy": number(true_positives.sum() / total) if total else None,
        "mean_class_accuracy": number(np.nanmean(accuracy)) if np.any(present) else None,
        "frequency_weighted_iou": (number(np.sum(frequency[present] * iou[present])) if total
                                   else None),
        "num_pixels": total,
    }
