"""DeepLab's align-corners geometry against a transcription of Caffe's Interp layer."""

import numpy as np
import pytest
import tensorflow as tf
from caffe_fixtures import (
    caffe_interp,
    deeplab_label_shrink,
    deeplab_zoom_to_image,
    interp_size,
)
from conftest import tiny_model

from deeplab_resnet.model import geometry
from deeplab_resnet.model.msc import MultiScale


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


@pytest.mark.parametrize("in_size,out_size", [((41, 41), (31, 21)), ((13, 17), (97, 129)),
                                              ((48, 30), (34, 24)), ((5, 6), (1, 1)),
                                              ((1, 4), (3, 7)), ((9, 9), (9, 9))])
def test_resize_align_corners_is_caffe_interp(in_size, out_size):
    x = _random((2, *in_size, 3))
    got = geometry.resize_align_corners(tf.constant(x), out_size).numpy()
    # Caffe rounds the sample positions to float32 (i * 1.3333334); ours are exact.
    np.testing.assert_allclose(got, caffe_interp(x, *out_size), rtol=0, atol=3e-5)


def test_resize_align_corners_with_dynamic_sizes_keeps_dtype():
    x = _random((1, 13, 17, 2))
    fn = tf.function(geometry.resize_align_corners,
                     input_signature=[tf.TensorSpec([None, None, None, 2], tf.bfloat16),
                                      tf.TensorSpec([2], tf.int32)])
    got = fn(tf.constant(x, tf.bfloat16), tf.constant([25, 33]))
    assert got.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), caffe_interp(x, 25, 33),
                               atol=0.05)


@pytest.mark.parametrize("in_size,out_size", [((97, 129), (13, 17)), ((96, 128), (13, 17)),
                                              ((321, 321), (31, 21)), ((20, 30), (1, 1)),
                                              ((40, 33), (7, 10))])
def test_label_shrink_takes_the_nearest_aligned_pixel(in_size, out_size):
    labels = np.random.default_rng(1).integers(0, 256, (2, *in_size)).astype(np.int32)
    got = geometry.shrink_labels(tf.constant(labels), out_size).numpy()
    np.testing.assert_array_equal(got, deeplab_label_shrink(labels, *out_size))


def test_label_shrink_at_8k_plus_1_is_every_8th_pixel():
    labels = np.arange(2 * 97 * 129).reshape(2, 97, 129).astype(np.int32)
    got = geometry.shrink_labels(tf.constant(labels), [13, 17]).numpy()
    np.testing.assert_array_equal(got, labels[:, ::8, ::8])


@pytest.mark.parametrize("logit_size,image_size", [((9, 9), (65, 65)), ((9, 9), (37, 50)),
                                                   ((5, 7), (40, 56)), ((6, 8), (41, 57))])
def test_logits_to_image_reads_logit_p_over_8(logit_size, image_size):
    """At 8k+1 the align-corners zoom x8; otherwise DeepLab's pad-zoom-crop geometry."""
    logits = _random((1, *logit_size, 4), seed=2)
    got = geometry.logits_to_image(tf.constant(logits), image_size).numpy()
    np.testing.assert_allclose(got, deeplab_zoom_to_image(logits, *image_size), atol=2e-6)
    np.testing.assert_array_equal(got[:, ::8, ::8], logits[:, :got[:, ::8].shape[1],
                                                           :got[:, :, ::8].shape[2]])


@pytest.mark.parametrize("size,expected", [(321, (241, 161)), (97, (73, 49)), (48, (34, 24)),
                                           (49, (37, 25))])
def test_msc_input_sizes_are_caffe_interp_sizes(size, expected):
    assert (geometry.msc_input_size(size, 0.75), geometry.msc_input_size(size, 0.5)) == expected
    assert expected == (interp_size(size, shrink=4, zoom=3), interp_size(size, shrink=2))
    assert int(geometry.msc_input_size(tf.constant(size), 0.75)) == expected[0]
    assert geometry.msc_input_size(size, 1.0) == size


@pytest.mark.parametrize("size", [(49, 57), (48, 56)], ids=["odd", "even"])
def test_msc_is_deeplab_msc_net(size):
    """DeepLab's MSC net with numpy Interp: shrunk inputs, logits zoomed to the 1.0 logits, max."""
    model = tiny_model(3, seed=4)
    images = _random((2, *size, 3), seed=5) * 40
    fused, per_scale = MultiScale(model, (1.0, 0.75, 0.5))(tf.constant(images))
    expected = [model(tf.constant(images)).numpy()]
    for shrink, zoom in ((4, 3), (2, 1)):
        small = caffe_interp(images, interp_size(size[0], shrink, zoom),
                             interp_size(size[1], shrink, zoom))
        expected.append(model(tf.constant(small)).numpy())
    # Caffe's float32 sample positions move the small inputs by ~1e-5 of their range.
    for got, want in zip(per_scale, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-3)
    reference = expected[0]
    want = reference
    for logits in expected[1:]:
        want = np.maximum(want, caffe_interp(logits, *reference.shape[1:3]))
    np.testing.assert_allclose(fused.numpy(), want, rtol=1e-4, atol=1e-3)
