"""The confusion matrix and the scores derived from it."""

import numpy as np
import pytest

from deeplab_resnet.predict import metrics


def test_confusion_matrix_counts_pairs_and_skips_ignored_pixels():
    labels = np.array([[0, 0, 1, 255], [2, 2, 255, 1]])
    predictions = np.array([[0, 1, 1, 2], [2, 0, 0, 1]])
    confusion = metrics.confusion_matrix(labels, predictions, 3, ignore_label=255)
    expected = np.zeros((3, 3), np.int64)
    for t, p in [(0, 0), (0, 1), (1, 1), (2, 2), (2, 0), (1, 1)]:
        expected[t, p] += 1
    np.testing.assert_array_equal(confusion, expected)
    assert confusion.dtype == np.int64 and confusion.sum() == 6


def test_confusion_matrix_of_a_dataset_is_the_sum_over_images():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 5, (7, 9)) for _ in range(3)]
    predictions = [rng.integers(0, 5, (7, 9)) for _ in range(3)]
    per_image = sum(metrics.confusion_matrix(truth, p, 5) for truth, p in zip(labels, predictions))
    whole = metrics.confusion_matrix(np.stack(labels), np.stack(predictions), 5)
    np.testing.assert_array_equal(per_image, whole)


@pytest.mark.parametrize("bad", [4, 254, -1])
def test_label_values_outside_classes_and_ignore_are_refused(bad):
    labels = np.array([0, 1, 255, bad])
    with pytest.raises(ValueError, match=f"label values {bad} "):
        metrics.confusion_matrix(labels, np.zeros(4, int), 4)


def test_a_custom_ignore_label_is_skipped():
    labels = np.array([0, 1, 9, 9])
    confusion = metrics.confusion_matrix(labels, np.array([0, 1, 1, 0]), 2, ignore_label=9)
    np.testing.assert_array_equal(confusion, [[1, 0], [0, 1]])


def test_scores_by_hand():
    # Rows: truth, columns: prediction. Class 2 is predicted but never true;
    # class 3 appears nowhere and must not count in the means.
    confusion = np.array([[5, 1, 0, 0],
                          [2, 3, 1, 0],
                          [0, 0, 0, 0],
                          [0, 0, 0, 0]])
    result = metrics.scores(confusion, ["a", "b", "c", "d"])
    iou_a = 5 / (6 + 7 - 5)
    iou_b = 3 / (6 + 4 - 3)
    iou_c = 0 / (0 + 1 - 0)
    assert result["per_class_iou"] == pytest.approx({"a": iou_a, "b": iou_b, "c": iou_c, "d": None})
    assert result["mean_iou"] == pytest.approx((iou_a + iou_b + iou_c) / 3)
    assert result["pixel_accuracy"] == pytest.approx(8 / 12)
    assert result["mean_class_accuracy"] == pytest.approx((5 / 6 + 3 / 6) / 2)
    assert result["frequency_weighted_iou"] == pytest.approx(0.5 * iou_a + 0.5 * iou_b)
    assert result["per_class_accuracy"]["c"] is None and result["num_pixels"] == 12


def test_scores_of_nothing_scored_are_none():
    result = metrics.scores(np.zeros((3, 3), np.int64))
    assert result["mean_iou"] is None and result["pixel_accuracy"] is None
    assert list(result["per_class_iou"]) == ["class_0", "class_1", "class_2"]
