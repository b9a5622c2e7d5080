"""Caffe-exact primitives against a direct numpy transcription of Caffe's loops."""

import math

import numpy as np
import pytest
import tensorflow as tf

from deeplab_resnet.model import layers


def caffe_pool_reference(x, k, s, p, mode):
    """Caffe's PoolingLayer forward (ceil mode) for one NHWC array, loop by loop."""
    n, h, w, c = x.shape
    has_pad = p > 0

    def size(dim):
        out = int(math.ceil((dim + 2 * p - k) / s)) + 1
        if has_pad and (out - 1) * s >= dim + p:
            out -= 1
        return out

    oh, ow = size(h), size(w)
    out = np.zeros((n, oh, ow, c), np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            pool_size = (he - hs) * (we - ws)
            hs, ws = max(hs, 0), max(ws, 0)
            he, we = min(he, h), min(we, w)
            window = x[:, hs:he, ws:we, :]
            if mode == "max":
                out[:, i, j] = window.max(axis=(1, 2))
            else:
                out[:, i, j] = window.sum(axis=(1, 2)) / pool_size
    return out


@pytest.mark.parametrize("size", [5, 6, 7, 8, 160, 161])
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (3, 2, 0), (2, 2, 0), (3, 1, 1), (5, 3, 2), (2, 1, 0),
                                   (4, 2, 1)])
@pytest.mark.parametrize("mode", ["max", "ave"])
def test_pooling_matches_caffe(size, k, s, p, mode):
    if p >= k:
        pytest.skip("Caffe requires pad < kernel")
    rng = np.random.default_rng(size * 100 + k * 10 + s)
    x = rng.normal(size=(1, size, size + 1, 2)).astype(np.float32)
    fn = layers.max_pool if mode == "max" else layers.avg_pool
    got = fn(tf.constant(x), k, s, p).numpy()
    want = caffe_pool_reference(x, k, s, p, mode)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_pooling_with_dynamic_shape_matches_static():
    x = tf.random.stateless_normal([1, 10, 13, 3], seed=[1, 2])
    fn = tf.function(lambda t: layers.max_pool(t, 3, 2, 1),
                     input_signature=[tf.TensorSpec([1, None, None, 3])])
    np.testing.assert_array_equal(fn(x).numpy(), layers.max_pool(x, 3, 2, 1).numpy())
    fa = tf.function(lambda t: layers.avg_pool(t, 3, 2, 1),
                     input_signature=[tf.TensorSpec([1, None, None, 3])])
    np.testing.assert_allclose(fa(x).numpy(), layers.avg_pool(x, 3, 2, 1).numpy(), rtol=1e-6)


def test_pool_output_size_last_window_rule():
    # conv1 of a 320 input gives 160; ceil mode without the rule would be 81 too,
    # but for 161 + pad 1 the last window would start in the trailing pad.
    assert layers.pool_output_size(160, 3, 2, 1) == 81
    assert layers.pool_output_size(161, 3, 2, 1) == 81
    assert layers.pool_output_size(4, 2, 2, 1) == 3
    assert layers.pool_output_size(3, 3, 2, 0) == 1


def test_conv_output_size():
    assert layers.conv_output_size(321, 7, 2, 3) == 161
    assert layers.conv_output_size(320, 7, 2, 3) == 160
    assert layers.conv_output_size(41, 3, 1, 24, 24) == 41


def caffe_conv_reference(x, w, b, s, p, d, group):
    """Direct convolution, Caffe layout weights (out, in/group, kh, kw), NHWC input."""
    n, h, wd, c = x.shape
    out_c, in_g, kh, kw = w.shape
    oh = (h + 2 * p - (d * (kh - 1) + 1)) // s + 1
    ow = (wd + 2 * p - (d * (kw - 1) + 1)) // s + 1
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((n, oh, ow, out_c))
    per_group = out_c // group
    for o in range(out_c):
        g = o // per_group
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, i * s:i * s + d * (kh - 1) + 1:d, j * s:j * s + d * (kw - 1) + 1:d,
                           g * in_g:(g + 1) * in_g]
                out[:, i, j, o] = np.einsum("nhwc,chw->n", patch, w[o])
        out[..., o] += b[o]
    return out


@pytest.mark.parametrize("s,p,d,group", [(1, 1, 1, 1), (2, 3, 1, 1), (1, 2, 2, 2), (2, 4, 4, 1)])
def test_conv2d_matches_caffe(s, p, d, group):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 9, 8, 4)).astype(np.float32)
    w = rng.normal(size=(6, 4 // group, 3, 3)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    got = layers.conv2d(tf.constant(x), tf.constant(w.transpose(2, 3, 1, 0)), tf.constant(b),
                        stride=s, pad=p, dilation=d, group=group).numpy()
    np.testing.assert_allclose(got, caffe_conv_reference(x, w, b, s, p, d, group), rtol=1e-4,
                               atol=1e-4)


def test_batch_norm_uses_given_epsilon():
    x = tf.constant([[[[1.0, 2.0]]]])
    mean = tf.constant([0.5, 1.0])
    var = tf.constant([1e-6, 4.0])
    y = layers.batch_norm(x, mean, var, tf.constant([2.0, 1.0]), tf.constant([0.0, 1.0]), eps=1e-5)
    expected = [(1.0 - 0.5) / np.sqrt(1e-6 + 1e-5) * 2.0, (2.0 - 1.0) / np.sqrt(4.0 + 1e-5) + 1.0]
    np.testing.assert_allclose(y.numpy().ravel(), expected, rtol=1e-5)


@pytest.mark.parametrize("rate, pad, size", [(2, 2, (9, 11)), (4, 4, (10, 7)), (3, 5, (8, 8)),
                                             (2, 0, (9, 9)), (2, 7, (6, 6))])
def test_dilated_convolution_gradients_equal_space_to_batch(rate, pad, size):
    rng = np.random.default_rng(rate + pad)
    x = tf.constant(rng.normal(size=(2,) + size + (5,)), tf.float32)
    w = tf.constant(rng.normal(size=(3, 3, 5, 4)), tf.float32)
    results = []
    for fn in (lambda x, w: layers.conv2d(x, w, pad=pad, dilation=rate),
               lambda x, w: tf.nn.atrous_conv2d(
                   tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]), w, rate, "VALID")):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = fn(x, w)
            loss = tf.reduce_sum(y * tf.cos(y))
        results.append([y.numpy()] + [g.numpy() for g in tape.gradient(loss, [x, w])])
    for ours, reference in zip(*results):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max())
