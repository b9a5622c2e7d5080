"""Inference form of the network: frozen BatchNorm and Scale folded into the convolutions.

With frozen statistics, BN(conv(x, W)) = conv(x, W * a) + (offset - mean * a) where
a = scale / sqrt(variance + eps). Folding removes two elementwise passes per layer
and leaves conv + bias + ReLU, which TensorFlow's CPU (oneDNN) and GPU backends
run as one fused kernel. Padding stays inside the convolution (explicit pads), so
no padded copy of any activation is made except for pool1. The ASPP head, whose
convolutions have only as many output channels as classes (a shape the CPU
kernels run slowly), is one 1x1 convolution producing every tap's output,
followed by shifted sums (`head_as_matmul`). The network may
compute in bfloat16 or float16 (kernels stored in that dtype, the ASPP head
optionally float32); its logits are float32.
"""

import numpy as np
import tensorflow as tf

from deeplab_resnet.model import arch as arch_lib
from deeplab_resnet.model import layers
from deeplab_resnet.model.layers import FLOAT16_MAX
from deeplab_resnet.model.network import max_pool, residual


def fold_params(model):
    """{conv name: (HWIO kernel, bias)} with each conv's BatchNorm/Scale folded in (float32,
    computed in float64)."""
    p = {k: tf.cast(v, tf.float64) for k, v in model.params.items()}
    folded = {}
    for conv in model.arch.convs:
        w = p[conv.weights]
        b = p[conv.biases] if conv.bias else tf.zeros([conv.out_channels], tf.float64)
        if conv.bn:
            w, b = layers.fold_batch_norm(w, b, *(p[conv.bn_param(k)] for k in arch_lib.BN_KINDS),
                                          eps=model.bn_eps)
        folded[conv.name] = (w.numpy().astype(np.float32), b.numpy().astype(np.float32))
    return folded


def _shiftable(convs):
    """Whether every conv keeps its input's size (stride 1, "same" padding) and is linear
    (no ReLU), so that it is a sum of shifted 1x1 convolutions, one per tap."""
    return all(c.stride == 1 and c.pad == c.dilation * (c.kernel // 2) and not c.relu
               for c in convs)


def head_as_matmul(kernels, head):
    """The ASPP head (a sum of convolutions of one input) as one 1x1 convolution and shifts.

    sum_c conv(x, W_c, rate r_c) = sum over every tap (c, a, b) of
    x @ W_c[a, b] shifted by (r_c (a - k//2), r_c (b - k//2)). The head's
    convolutions have few output channels (the classes), on which the
    convolution kernels run at a tenth of their usual rate; one 1x1
    convolution with all the taps' outputs side by side is a well-shaped
    matrix product (measured 5-8x faster at 513x513 on an AVX2 CPU).

    Args:
        kernels: {conv name: (HWIO kernel, bias)}, one dtype.
        head: the head's `arch.Conv`s (stride 1, "same" padding).
    Returns:
        ([1, 1, Cin, taps * Cout] kernel, summed bias, [(dy, dx)] per tap).
    """
    columns, offsets = [], []
    for conv in head:
        w = kernels[conv.name][0]
        centre = conv.kernel // 2
        for a in range(conv.kernel):
            for b in range(conv.kernel):
                columns.append(w[a, b])
                offsets.append((conv.dilation * (a - centre), conv.dilation * (b - centre)))
    bias = tf.add_n([kernels[conv.name][1] for conv in head])
    return tf.concat(columns, axis=-1)[tf.newaxis, tf.newaxis], bias, offsets


@tf.autograph.experimental.do_not_convert  # plain Python over the offsets, in any tf.function
def shifted_sum(taps, offsets, classes):
    """sum_i taps[..., i-th block of `classes` channels] shifted by offsets[i], zeros outside."""
    margin = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    h, w = tf.shape(taps)[1], tf.shape(taps)[2]
    padded = tf.pad(taps, [[0, 0], [margin, margin], [margin, margin], [0, 0]])
    return tf.add_n([padded[:, margin + dy:margin + dy + h, margin + dx:margin + dx + w,
                           i * classes:(i + 1) * classes]
                     for i, (dy, dx) in enumerate(offsets)])


class FusedDeepLab(tf.Module):
    """A frozen, BN-folded copy of a `DeepLabResNet` for inference.

    Args:
        model: the trained `DeepLabResNet` (its current weights are copied).
        compute_dtype: the dtype the network computes in (tf.float32,
            tf.bfloat16 or tf.float16; see `deeplab_resnet.runtime.precision`).
            Images are cast to it; the logits come back float32.
        float32_head: with a reduced `compute_dtype`, run the ASPP head in
            float32 on the backbone's features.

    Example:
        >>> fused = FusedDeepLab(model)
        >>> logits = fused(preprocess(images))   # same as model(...), faster
    """

    def __init__(self, model, compute_dtype=tf.float32, float32_head=False, name=None):
        super().__init__(name=name or "fused_deeplab")
        self.arch = model.arch
        self.variant = model.variant
        self.num_classes = model.num_classes
        self.compute_dtype = tf.as_dtype(compute_dtype)
        self.head_dtype = tf.float32 if float32_head else self.compute_dtype
        head = {conv.name for conv in self.arch.head}
        # Constants, not variables: oneDNN then prepares each kernel's layout once
        # and reuses it (measured 1.6x faster on CPU at 513x513). Each is stored
        # in the dtype it computes in, rounded once from the float32 fold.
        self.kernels = {}
        # A folded kernel or bias beyond float16's range (a small variance makes W * a
        # large) stays float32: that convolution (or the whole head) computes in float32,
        # its output cast back, and never overflows.
        folded = fold_params(model)
        too_large = {name for name, (w, b) in folded.items()
                     if self.compute_dtype == tf.float16
                     and max(np.abs(w).max(), np.abs(b).max()) > FLOAT16_MAX}
        if too_large & head:
            self.head_dtype = tf.float32
        self._promoted = frozenset(too_large - head)
        for conv_name, (w, b) in folded.items():
            dtype = self.head_dtype if conv_name in head else self.compute_dtype
            dtype = tf.float32 if conv_name in self._promoted else dtype
            self.kernels[conv_name] = (tf.cast(tf.constant(w), dtype),
                                       tf.cast(tf.constant(b), dtype))
        self.head = None
        if _shiftable(self.arch.head):
            self.head = head_as_matmul(self.kernels, self.arch.head)

    def _conv(self, x, conv):
        w, b = self.kernels[conv.name]
        y = layers.conv2d(tf.cast(x, w.dtype), w, b, stride=conv.stride, pad=conv.pad,
                          dilation=conv.dilation, differentiable=False)
        y = tf.nn.relu(y) if conv.relu else y
        return tf.cast(y, self.compute_dtype) if conv.name in self._promoted else y

    def __call__(self, images, training=False):
        """float32 logits for preprocessed NHWC images (of any float dtype)."""
        if training:
            raise ValueError("FusedDeepLab is for inference only")
        # Each convolution computes in its kernels' dtype (the head's may be float32).
        if self.head is None:
            logits = arch_lib.run(self.arch, images, conv=self._conv, pool=max_pool,
                                  join=residual, join_head=tf.add_n)
            return tf.cast(logits, tf.float32)
        features = arch_lib.run(self.arch, images, conv=self._conv, pool=max_pool, join=residual)
        kernel, bias, offsets = self.head
        taps = tf.nn.conv2d(tf.cast(features, kernel.dtype), kernel, 1, "VALID")
        logits = shifted_sum(taps, offsets, self.arch.head[0].out_channels) + bias
        return tf.cast(logits, tf.float32)
