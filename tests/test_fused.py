"""The BN-folded inference network computes what the training network computes."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_resnet.fused import FusedDeepLab
from deeplab_resnet.model import DeepLabResNet


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
    got = FusedDeepLab(model)(x).numpy()
    assert np.isfinite(want).all()
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_fused_refuses_training():
    with pytest.raises(ValueError, match="inference only"):
        FusedDeepLab(DeepLabResNet("tiny", 2))(tf.zeros([1, 33, 33, 3]), training=True)
