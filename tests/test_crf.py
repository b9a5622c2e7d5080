"""Dense CRF post-processing; the tests that run it skip cleanly without pydensecrf2."""

import argparse
import sys

import numpy as np
import pytest

from deeplab_resnet.predict import crf
from deeplab_resnet.predict import prediction as predict
from deeplab_resnet.cli import predict_flags
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.model.network import DeepLabResNet


def _two_region_scene():
    """Left half dark, right half bright; probabilities right but noisy per pixel."""
    rng = np.random.default_rng(0)
    h, w = 24, 32
    image = np.zeros((h, w, 3), np.uint8)
    image[:, w // 2:] = 220
    truth = np.zeros((h, w), np.int64)
    truth[:, w // 2:] = 1
    confidence = np.where(rng.random((h, w)) < 0.3, 0.35, 0.75)  # 30 % of the pixels wrong
    probabilities = np.empty((h, w, 2), np.float32)
    probabilities[..., 1] = np.where(truth == 1, confidence, 1 - confidence)
    probabilities[..., 0] = 1 - probabilities[..., 1]
    return image, probabilities, truth


@pytest.fixture
def densecrf():
    return pytest.importorskip("pydensecrf.densecrf")


def test_defaults_are_deeplabs_published_settings():
    assert crf.CRFParams() == crf.CRFParams(iterations=10, gaussian_sxy=1, gaussian_weight=3,
                                            bilateral_sxy=67, bilateral_srgb=3, bilateral_weight=4)


def test_crf_cleans_noisy_labels_along_colour_edges(densecrf):
    image, probabilities, truth = _two_region_scene()
    before = (probabilities.argmax(-1) != truth).mean()
    refined = crf.refine(image, probabilities)
    after = (refined.argmax(-1) != truth).mean()
    assert before > 0.2 and after < 0.02
    assert refined.shape == probabilities.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(-1), 1.0, rtol=1e-4)


def test_zero_iterations_return_the_unary_distribution(densecrf):
    image, probabilities, _ = _two_region_scene()
    refined = crf.refine(image, probabilities, crf.CRFParams(iterations=0))
    np.testing.assert_allclose(refined, probabilities, rtol=1e-4, atol=1e-5)


def test_predictor_applies_the_crf_to_its_probabilities(densecrf):
    model = DeepLabResNet("tiny", 3, seed=5)
    image = np.random.default_rng(2).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    params = crf.CRFParams(iterations=5)
    plain = predict.Predictor(model)(image)
    refined = predict.Predictor(model, crf=params)(image)
    expected = crf.refine(image, plain.probabilities, params)
    np.testing.assert_allclose(refined.probabilities, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(refined.labels, expected.argmax(-1))
    assert not np.allclose(refined.probabilities, plain.probabilities, atol=1e-3)


def test_missing_library_gives_the_install_hint(monkeypatch):
    # A None entry in sys.modules makes the import fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    assert not crf.available()
    with pytest.raises(DeepLabError, match=r"pip install"):
        crf.refine(np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 2), 0.5, np.float32))


def test_crf_flags_build_the_params(densecrf):
    parser = argparse.ArgumentParser()
    predict_flags.add_prediction_args(parser)
    assert predict_flags.crf_params(parser.parse_args([])) is None
    args = parser.parse_args(["--crf", "--crf-iterations", "5", "--crf-gaussian-sxy", "2",
                              "--crf-gaussian-weight", "1", "--crf-bilateral-sxy", "49",
                              "--crf-bilateral-srgb", "13", "--crf-bilateral-weight", "5"])
    assert predict_flags.crf_params(args) == crf.CRFParams(5, 2, 1, 49, 13, 5)
    assert predict_flags.crf_params(parser.parse_args(["--crf"])) == crf.CRFParams()
