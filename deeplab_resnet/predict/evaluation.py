"""Evaluation: predict every image of a list, count one confusion matrix, score it.

`evaluate` runs the prediction over (image, label) pairs and counts the matrix;
`Scores` derives every number from it (`metrics.scores`) and formats the report
evaluate.py prints. `Segmenter.evaluate` and evaluate.py both go through these.
"""

import collections
import concurrent.futures
import dataclasses
import functools
import os

import numpy as np

from deeplab_resnet.data.images import read_image, size_mismatch
from deeplab_resnet.data.labels import check_labels, read_label
from deeplab_resnet.data.palette import save_label_png
from deeplab_resnet import defaults
from deeplab_resnet.predict import metrics
from deeplab_resnet.predict.prediction import prefetch
from deeplab_resnet.errors import BadFileError


def _read_pair(num_classes, ignore_label, pair):
    """(image path, RGB image, label or None) of one pair, the label checked against both."""
    image_path, label_path = pair
    image = read_image(image_path)
    label = None if label_path is None else read_label(label_path)
    if label is not None:
        if label.shape != image.shape[:2]:
            raise BadFileError(size_mismatch(label_path, label.shape, image_path, image.shape),
                               path=label_path)
        try:
            check_labels(label, num_classes, ignore_label)
        except ValueError as exc:
            raise BadFileError(f"{label_path}: {exc}", path=label_path) from None
    return image_path, image, label


# Images whose scoring and saving may wait while the network runs the next ones.
SCORING_DEPTH = 2


def evaluate(predictor, pairs, num_classes, ignore_label=defaults.IGNORE_LABEL, save_dirs=(),
             progress=None, palette=None):
    """Predicts every listed image and sums the confusion matrix.

    Three stages overlap: the next images and labels are decoded (`prediction.prefetch`)
    while the network runs, and what follows the network (the dense CRF when set, the
    confusion counts, the PNGs) runs in another thread for the images before, up to
    `SCORING_DEPTH` behind. An error is raised for the first image it concerns.

    Args:
        predictor: a `prediction.Predictor` (`labels_later` is used).
        pairs: [(image path, label path or None)]; an image without a label
            is predicted (and saved) but not counted.
        num_classes: number of classes of the model.
        ignore_label: label value that is not scored.
        save_dirs: folders that each get the predicted labels as <stem>.png.
        progress: called after each image with the images done and the confusion matrix
            so far (e.g. to show a running mean IoU), or None; from the scoring thread.
        palette: 256x3 uint8 colours of those PNGs (default VOC's; see `datasets.classes`).
    Returns:
        (num_classes, num_classes) int64 confusion matrix [true, predicted].
    Raises:
        BadFileError for an unreadable image or label, a label whose size
        differs from its image's, or a label value that is neither a class nor
        `ignore_label`; WriteError for a PNG that cannot be written.
    """
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    done = 0

    def score(image_path, label, labels_of):
        nonlocal done
        predicted = labels_of()
        if label is not None:
            confusion[...] += metrics.count_checked(label, predicted, num_classes, ignore_label)
        stem = os.path.splitext(os.path.basename(image_path))[0]
        for folder in save_dirs:
            save_label_png(predicted, os.path.join(folder, stem + ".png"), palette)
        done += 1
        if progress is not None:
            progress(done, confusion)

    read = functools.partial(_read_pair, num_classes, ignore_label)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                               thread_name_prefix="deeplab-score") as pool:
        scoring = collections.deque()
        try:
            for image_path, image, label in prefetch(read, pairs):
                scoring.append(pool.submit(score, image_path, label,
                                           predictor.labels_later(image)))
                while len(scoring) > SCORING_DEPTH:
                    scoring[0].result()  # kept until done: its error is raised again below
                    scoring.popleft()
        finally:  # also when a later image failed: an earlier image's error comes first
            for future in scoring:
                future.result()
    return confusion


def _fmt(value):
    return "n/a" if value is None else f"{value:.4f}"


@dataclasses.dataclass(frozen=True)
class Scores:
    """The scores of one evaluation, all derived from its confusion matrix.

    A class that appears neither in the labels nor in the predictions has no
    IoU (None) and is left out of the mean IoU.

    Attributes:
        mean_iou: mean IoU over the classes that have one (None if none has).
        per_class_iou: {class name: IoU or None}.
        pixel_accuracy: correctly labelled pixels / scored pixels.
        mean_class_accuracy: mean over the classes present in the labels of
            their accuracy (recall).
        per_class_accuracy: {class name: accuracy or None}.
        frequency_weighted_iou: IoU weighted by each class's share of the labels.
        num_pixels: pixels scored (those whose label is not the ignore label).
        confusion_matrix: (C, C) int64 numpy array, [true class, predicted class].

    Example:
        >>> scores = Scores.from_confusion(np.array([[3, 1], [0, 4]]), ["sky", "sea"])
        >>> round(scores.mean_iou, 4), scores.per_class_iou["sea"]
        (0.775, 0.8)
    """
    # In metrics.scores' order, the order of evaluate.py's JSON report.
    per_class_iou: dict
    per_class_accuracy: dict
    mean_iou: float
    pixel_accuracy: float
    mean_class_accuracy: float
    frequency_weighted_iou: float
    num_pixels: int
    confusion_matrix: np.ndarray = dataclasses.field(repr=False)

    @classmethod
    def from_confusion(cls, confusion, class_names=None):
        """The scores of a confusion matrix (see `metrics.scores`).

        Args:
            confusion: (C, C) counts, [true class, predicted class].
            class_names: C names (default class_<i>).
        """
        confusion = np.asarray(confusion, dtype=np.int64)
        return cls(confusion_matrix=confusion, **metrics.scores(confusion, class_names))

    def as_dict(self):
        """Every score as plain Python values (JSON-ready), the confusion matrix as lists."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["confusion_matrix"] = self.confusion_matrix.tolist()
        return values

    def report(self):
        """The report evaluate.py prints: per-class IoU, the accuracies, fwIoU and, last,
        `Mean IoU: 0.xxxx`."""
        width = max(len(name) for name in self.per_class_iou)
        lines = ["Per-class IoU:"]
        for name, iou in self.per_class_iou.items():
            lines.append(f"  {name:<{width}}  {_fmt(iou)}" + ("  (absent)" if iou is None else ""))
        lines += [f"Pixel accuracy: {_fmt(self.pixel_accuracy)}",
                  f"Mean class accuracy: {_fmt(self.mean_class_accuracy)}",
                  f"Frequency-weighted IoU: {_fmt(self.frequency_weighted_iou)}",
                  f"Mean IoU: {_fmt(self.mean_iou)}"]
        return "\n".join(lines)
