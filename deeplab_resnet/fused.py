"""Inference form of the network: frozen BatchNorm and Scale folded into the convolutions.

With frozen statistics, BN(conv(x, W)) = conv(x, W * a) + (offset - mean * a) where
a = scale / sqrt(variance + eps). Folding removes two elementwise passes per layer
and leaves conv + bias + ReLU, which TensorFlow's CPU (oneDNN) and GPU backends
run as one fused kernel. Padding stays inside the convolution (explicit pads), so
no padded copy of any activation is made except for pool1.
"""

import numpy as np
from deeplab_resnet.tf_quiet import tf

from deeplab_resnet import layers


def fold_params(model):
    """{conv name: (HWIO kernel, bias)} with each conv's BatchNorm/Scale folded in."""
    p = {k: v.numpy() for k, v in model.params.items()}
    folded = {}
    for conv in model.arch.convs:
        w = p[f"{conv.name}/weights"].astype(np.float64)
        b = p[f"{conv.name}/biases"].astype(np.float64) if conv.bias else np.zeros(w.shape[-1])
        if conv.bn:
            a = p[f"{conv.bn}/scale"] / np.sqrt(p[f"{conv.bn}/variance"].astype(np.float64)
                                                + model.bn_eps)
            w = w * a
            b = (b - p[f"{conv.bn}/mean"]) * a + p[f"{conv.bn}/offset"]
        folded[conv.name] = (w.astype(np.float32), b.astype(np.float32))
    return folded


class FusedDeepLab(tf.Module):
    """A frozen, BN-folded copy of a `DeepLabResNet` for inference.

    Args:
        model: the trained `DeepLabResNet` (its current weights are copied).

    Example:
        >>> fused = FusedDeepLab(model)
        >>> logits = fused(preprocess(images))   # same as model(...), faster
    """

    def __init__(self, model, name=None):
        super().__init__(name=name or "fused_deeplab")
        self.arch = model.arch
        self.variant = model.variant
        self.num_classes = model.num_classes
        # Constants, not variables: oneDNN then prepares each kernel's layout once
        # and reuses it (measured 1.6x faster on CPU at 513x513).
        self.kernels = {n: (tf.constant(w), tf.constant(b)) for n, (w, b) in fold_params(model).items()}

    def _conv(self, x, conv):
        w, b = self.kernels[conv.name]
        y = layers.conv2d(x, tf.cast(w, x.dtype), tf.cast(b, x.dtype), stride=conv.stride,
                          pad=conv.pad, dilation=conv.dilation, differentiable=False)
        return tf.nn.relu(y) if conv.relu else y

    def __call__(self, images, training=False):
        if training:
            raise ValueError("FusedDeepLab is for inference only")
        x = self._conv(images, self.arch.stem)
        kernel, stride, pad = self.arch.pool
        x = layers.max_pool(x, kernel, stride, pad)
        for block in self.arch.blocks:
            shortcut = x if block.branch1 is None else self._conv(x, block.branch1)
            y = x
            for conv in block.branch2:
                y = self._conv(y, conv)
            x = tf.nn.relu(y + shortcut)
        # The four ASPP branches share their input: one conv per rate, summed.
        return tf.add_n([self._conv(x, conv) for conv in self.arch.head])
