"""evaluation.evaluate overlaps the network with decoding and scoring: the same confusion
matrix and PNGs as one image at a time, labels completed later equal to those at once, and
an error raised for the first image it concerns."""

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_model
from deeplab_resnet.data.images import read_image
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.predict import crf
from deeplab_resnet.predict import evaluation
from deeplab_resnet.predict import metrics
from deeplab_resnet.predict import prediction as predict
from deeplab_resnet.errors import BadFileError, WriteError

NUM_CLASSES = 3


@pytest.fixture(scope="module")
def predictor():
    return predict.Predictor(tiny_model(NUM_CLASSES, seed=4, head_biases=[0.1, 0.0, -0.1]))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Five (image, label) PNG pairs of different sizes."""
    folder = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(3)
    out = []
    for i, (h, w) in enumerate([(30, 41), (25, 33), (40, 29), (33, 33), (21, 45)]):
        image, label = folder / f"img{i}.png", folder / f"lab{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(image)
        Image.fromarray(rng.integers(0, NUM_CLASSES, (h, w), np.uint8)).save(label)
        out.append((str(image), str(label)))
    return out


def test_confusion_and_pngs_equal_one_image_at_a_time(predictor, pairs, tmp_path):
    done = []
    confusion = evaluation.evaluate(predictor, pairs, NUM_CLASSES, save_dirs=[str(tmp_path)],
                                    progress=lambda count, confusion: done.append(count))
    expected = np.zeros_like(confusion)
    for image_path, label_path in pairs:
        predicted = predictor.predict_labels(read_image(image_path))
        expected += metrics.confusion_matrix(read_label(label_path), predicted,
                                             NUM_CLASSES, 255)
        stem = image_path.rsplit("/", 1)[1][: -len(".png")]
        np.testing.assert_array_equal(read_label(str(tmp_path / f"{stem}.png")),
                                      predicted)
    np.testing.assert_array_equal(confusion, expected)
    assert done == list(range(1, len(pairs) + 1)) and expected.sum() > 0


@pytest.mark.parametrize("with_crf", [False, True])
def test_labels_completed_later_equal_the_labels_at_once(predictor, with_crf):
    if with_crf:
        pytest.importorskip("pydensecrf.densecrf")
        predictor = predict.Predictor(predictor.model, crf=crf.CRFParams(iterations=3))
    image = np.random.default_rng(1).integers(0, 256, (30, 41, 3), np.uint8)
    np.testing.assert_array_equal(predictor.labels_later(image)(),
                                  predictor.predict_labels(image))


def test_an_earlier_images_write_error_comes_before_a_later_read_error(predictor, pairs,
                                                                       tmp_path, monkeypatch):
    def refuse(labels, path, palette=None):
        raise WriteError(path, "disk full")
    monkeypatch.setattr(evaluation, "save_label_png", refuse)
    broken = pairs[:1] + [(str(tmp_path / "missing.png"), pairs[1][1])]
    with pytest.raises(WriteError, match="img0.png"):
        evaluation.evaluate(predictor, broken, NUM_CLASSES, save_dirs=[str(tmp_path)])


def test_a_bad_label_is_raised_after_the_images_before_it_are_scored(predictor, pairs):
    done = []
    bad = pairs[:3] + [(pairs[3][0], pairs[0][1])]  # a label of another size
    with pytest.raises(BadFileError, match="lab0.png: label is"):
        evaluation.evaluate(predictor, bad, NUM_CLASSES,
                            progress=lambda count, confusion: done.append(count))
    assert len(done) == 3
