"""The prediction path: logits, resizing, multi-scale fusion, flip, DeepLab's protocol."""

import numpy as np
import pytest
import tensorflow as tf

from caffe_fixtures import caffe_interp, deeplab_zoom_to_image, interp_size
from conftest import tiny_model
from deeplab_resnet.predict import prediction as predict
from deeplab_resnet.model.network import output_size, preprocess

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def model():
    return tiny_model(NUM_CLASSES, seed=3, head_biases=np.linspace(-0.5, 0.5, NUM_CLASSES))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)


def _logits(model, image):
    return model(preprocess(tf.constant(image)[tf.newaxis]))


def _softmax_at(logits, h, w):
    """Softmax of the logits read at image pixel p / 8 (DeepLab's zoom x8, cropped)."""
    return tf.nn.softmax(deeplab_zoom_to_image(np.asarray(logits), h, w))[0].numpy()


def test_single_scale_is_the_model_output_resized_to_the_image(model, image):
    prediction = predict.Predictor(model)(image)
    logits = _logits(model, image)
    assert prediction.logits.shape == (output_size(37, "tiny"), output_size(50, "tiny"),
                                       NUM_CLASSES)
    np.testing.assert_allclose(prediction.logits, logits[0].numpy(), rtol=1e-5, atol=1e-5)
    probabilities = _softmax_at(logits, 37, 50)
    np.testing.assert_allclose(prediction.probabilities, probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(prediction.labels, probabilities.argmax(-1))
    assert prediction.labels.shape == (37, 50) and prediction.labels.dtype == np.int32


def test_multi_scale_is_the_max_of_the_resized_scale_logits(model, image):
    scales = (1.0, 0.75, 0.5)
    prediction = predict.Predictor(model, scales=scales)(image)
    reference = _logits(model, image)
    fused = reference.numpy()
    for shrink, zoom in ((4, 3), (2, 1)):  # DeepLab's MSC net: Interp in, Interp back
        size = [interp_size(37, shrink, zoom), interp_size(50, shrink, zoom)]
        small = caffe_interp(preprocess(tf.constant(image)[tf.newaxis]), *size)
        fused = np.maximum(fused, caffe_interp(model(small), *fused.shape[1:3]))
    # Caffe's float32 sample positions move the small inputs by ~1e-5 of their range.
    np.testing.assert_allclose(prediction.logits, fused[0], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(prediction.probabilities, _softmax_at(fused, 37, 50),
                               rtol=1e-4, atol=1e-4)
    assert not np.allclose(prediction.logits, reference[0].numpy())


def test_flip_averages_the_probabilities_of_the_mirrored_image(model, image):
    plain = predict.Predictor(model)
    flipped = predict.Predictor(model, flip=True)
    expected = (plain(image).probabilities + plain(image[:, ::-1]).probabilities[:, ::-1]) / 2
    prediction = flipped(image)
    np.testing.assert_allclose(prediction.probabilities, expected, rtol=1e-5, atol=1e-6)
    # Raw logits stay those of the image itself.
    np.testing.assert_allclose(prediction.logits, plain(image).logits, rtol=1e-6, atol=1e-6)


def test_flip_makes_the_prediction_mirror_symmetric(model, image):
    # Caffe's padding is not symmetric, so the net alone is not mirror-equivariant;
    # with --flip, predicting the mirrored image gives the mirrored prediction.
    plain = predict.Predictor(model)
    flipped = predict.Predictor(model, flip=True)
    mirror = np.ascontiguousarray(image[:, ::-1])
    assert not np.allclose(plain(mirror).probabilities, plain(image).probabilities[:, ::-1],
                           atol=1e-6)
    np.testing.assert_allclose(flipped(mirror).probabilities,
                               flipped(image).probabilities[:, ::-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size,expected", [(1, 513), (500, 513), (513, 513), (514, 521),
                                           (521, 521), (522, 529)])
def test_padded_size_is_8k_plus_1(size, expected):
    assert predict.padded_size(size, 513) == expected
    assert int(predict.padded_size(tf.constant(size), 513)) == expected


def test_deeplab_protocol_pads_zooms_with_aligned_corners_and_crops(model, image):
    prediction = predict.Predictor(model, deeplab_protocol=True, pad_size=65)(image)
    padded = tf.pad(preprocess(tf.constant(image)[tf.newaxis]), [[0, 0], [0, 65 - 37],
                                                                  [0, 65 - 50], [0, 0]])
    logits = model(padded)
    assert logits.shape[1:3] == (9, 9)
    expected = _softmax_at(logits, 37, 50)
    np.testing.assert_allclose(prediction.logits, logits[0].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prediction.probabilities, expected, rtol=1e-5, atol=1e-6)
    assert prediction.labels.shape == (37, 50)


def test_any_image_size_runs_with_a_single_trace(model):
    predictor = predict.Predictor(model, scales=(1.0, 0.5), flip=True)
    rng = np.random.default_rng(1)
    for h, w in [(1, 1), (7, 3), (33, 64), (64, 33), (65, 65)]:
        prediction = predictor(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert prediction.labels.shape == (h, w)
        assert prediction.probabilities.shape == (h, w, NUM_CLASSES)
        np.testing.assert_allclose(prediction.probabilities.sum(-1), 1.0, rtol=1e-5)
    assert predictor.forward.experimental_get_tracing_count() == 1


def test_non_rgb_arrays_are_refused(model):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        predict.Predictor(model)(np.zeros((5, 5), np.uint8))


@pytest.mark.parametrize("settings", [{}, {"flip": True, "scales": (1.0, 0.75)},
                                      {"deeplab_protocol": True, "pad_size": 49}])
def test_labels_alone_equal_the_full_prediction(model, settings):
    predictor = predict.Predictor(model, **settings)
    rng = np.random.default_rng(5)
    for shape in ((33, 47, 3), (40, 25, 3)):
        image = rng.integers(0, 256, shape, np.uint8)
        labels = predictor.predict_labels(image)
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(labels, predictor(image).labels)
    # Only the class map leaves the device: one int32 [H, W] output.
    outputs = predictor.labels.get_concrete_function().structured_outputs
    assert outputs.dtype == tf.int32 and outputs.shape.as_list() == [None, None]
