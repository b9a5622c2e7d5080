"""The BN-folded inference network computes what the training network computes."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_resnet.model import layers
from deeplab_resnet.model.arch import Conv
from deeplab_resnet.model.fused import FusedDeepLab, head_as_matmul, shifted_sum
from deeplab_resnet.model.network import DeepLabResNet


def randomize_batchnorm(model, seed=0, tiny_variances=True):
    """Random statistics; deep nets get damping variances so activations stay finite."""
    rng = np.random.default_rng(seed)
    low, high = (0.2, 2.0) if tiny_variances else (1.0, 4.0)
    for name, var in model.params.items():
        n = var.shape[-1]
        if name.endswith("/mean"):
            var.assign(rng.normal(0, 0.5, n).astype(np.float32))
        elif name.endswith("/variance"):
            values = rng.uniform(low, high, n)
            if tiny_variances:
                values[: max(1, n // 8)] = 1e-6  # epsilon matters
            var.assign(values.astype(np.float32))
        elif name.endswith("/scale"):
            var.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
        elif name.endswith(("/offset", "/biases")):
            var.assign(rng.normal(0, 0.1, n).astype(np.float32))


@pytest.mark.parametrize("variant,size", [("tiny", (65, 64)), ("resnet50", (57, 50))])
def test_fused_matches_unfused(variant, size):
    model = DeepLabResNet(variant, 5, seed=3)
    randomize_batchnorm(model, tiny_variances=variant == "tiny")
    x = tf.random.stateless_normal([1, *size, 3], seed=[4, 5]) * 50.0
    want = model(x).numpy()
    fused = FusedDeepLab(model)
    assert np.isfinite(want).all()
    # eagerly and traced (autograph on, as a caller's tf.function has it)
    for got in (fused(x).numpy(), tf.function(lambda images: fused(images))(x).numpy()):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_fused_refuses_training():
    with pytest.raises(ValueError, match="inference only"):
        FusedDeepLab(DeepLabResNet("tiny", 2))(tf.zeros([1, 33, 33, 3]), training=True)


def test_head_as_matmul_is_the_sum_of_the_dilated_convolutions():
    # Rates up to past the input's size: those taps read only padding.
    rng = np.random.default_rng(0)
    head = [Conv(name=f"head{r}", bottom="x", in_channels=6, out_channels=4, kernel=3, pad=r,
                 dilation=r, bias=True) for r in (1, 3, 12)]
    kernels = {c.name: (tf.constant(rng.normal(size=(3, 3, 6, 4)), tf.float32),
                        tf.constant(rng.normal(size=4), tf.float32)) for c in head}
    x = tf.constant(rng.normal(size=(2, 7, 11, 6)), tf.float32)
    want = tf.add_n([layers.conv2d(x, *kernels[c.name], pad=c.pad, dilation=c.dilation,
                                   differentiable=False) for c in head]).numpy()
    kernel, bias, offsets = head_as_matmul(kernels, head)
    assert kernel.shape == (1, 1, 6, 3 * 9 * 4) and len(offsets) == 27
    got = (shifted_sum(tf.nn.conv2d(x, kernel, 1, "VALID"), offsets, 4) + bias).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_float16_folds_that_would_overflow_compute_in_float32():
    """A BatchNorm of tiny variance makes its folded kernel exceed float16's range: the fused
    network (inference) and the folded training forward keep that convolution in float32, and
    their float16 logits stay finite and close to float32's."""
    model = DeepLabResNet("tiny", 3, seed=4)
    first = model.arch.convs[0]  # W * a = 300 / sqrt(1e-12 + eps): about 1e5
    model.params[first.weights].assign(tf.fill(model.params[first.weights].shape, 300.0))
    variance = model.params[first.bn_param("variance")]
    variance.assign(tf.fill(variance.shape, 1e-12))
    images = tf.random.stateless_normal([1, 33, 33, 3], [1, 2], stddev=1e-3)
    reference = model(images).numpy()
    fused = FusedDeepLab(model, tf.float16)
    assert any(w.dtype == tf.float32 for w, _ in fused.kernels.values())
    for logits in (fused(images), model(tf.cast(images, tf.float16), training=True)):
        logits = tf.cast(logits, tf.float32).numpy()
        assert np.isfinite(logits).all()
        assert np.abs(logits - reference).max() <= 0.05 * np.abs(reference).max()
