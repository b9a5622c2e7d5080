"""Caffe-exact building blocks on NHWC tensors.

Every function here reproduces Caffe's arithmetic for any input size, odd or
even: explicit convolution padding, ceil-mode pooling with Caffe's last-window
rule, average pooling whose divisor counts the padded cells inside the pad
region, and inference BatchNorm with an explicit epsilon. Shapes may be
dynamic, so the same code serves a fixed-size training step and a serving
signature that accepts images of any size.
"""

import tensorflow as tf

from deeplab_resnet import defaults
from deeplab_resnet.runtime import devices
# Caffe's size formulas live with the converter's shape inference (plain Python);
# re-exported here for the network code.
from kaffe.sizes import conv_output_size, pool_output_size

__all__ = ["conv_output_size", "pool_output_size", "conv2d", "native_dilated_gradient",
           "max_pool", "avg_pool", "global_avg_pool", "global_max_pool", "batch_moments",
           "batch_norm"]


def _pair(value):
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def conv2d(x, weights, biases=None, stride=1, pad=0, dilation=1, group=1, differentiable=True):
    """Convolution with Caffe's explicit symmetric padding.

    Args:
        x: NHWC input.
        weights: HWIO kernel, `I` being input channels per group.
        biases: optional vector of output channels.
        stride, pad, dilation: int or (h, w) pair.
        group: number of channel groups.
        differentiable: keep dilated convolutions differentiable on every
            device: where the convolution runs on a CPU, whose kernels cannot
            backpropagate through a dilated Conv2D, with the gradient of
            `_dilated_conv`; on a GPU (cuDNN differentiates it) with
            TensorFlow's own. False always runs the native dilated kernel, for
            inference.
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(pad)
    dh, dw = _pair(dilation)
    padding = [[0, 0], [ph, ph], [pw, pw], [0, 0]] if (ph or pw) else "VALID"
    if (differentiable and dh == dw > 1 and sh == sw == 1 and group == 1
            and not native_dilated_gradient(x)):
        y = _dilated_conv(x, weights, dh, ph, pw)
    elif group == 1 or weights.shape[2] * group != x.shape[-1]:
        y = tf.nn.conv2d(x, weights, strides=[1, sh, sw, 1], padding=padding,
                         dilations=[1, dh, dw, 1])
    else:
        # tf.nn.conv2d infers grouping from the channel counts; kept explicit
        # through the split so every device kernel supports it.
        xs = tf.split(x, group, axis=-1)
        ws = tf.split(weights, group, axis=-1)
        y = tf.concat([tf.nn.conv2d(a, b, strides=[1, sh, sw, 1], padding=padding,
                                    dilations=[1, dh, dw, 1]) for a, b in zip(xs, ws)], -1)
    if biases is not None:
        y = tf.nn.bias_add(y, biases)
    return y


def native_dilated_gradient(x):
    """Whether TensorFlow can differentiate a dilated convolution of `x` where it runs.

    Decided when the operation is built, from the device it is pinned to (a
    `tf.device` scope around it in the same function, an eager tensor's
    device) or, unpinned, from whether a GPU is visible, as TensorFlow then
    places convolutions on GPU:0 (and a strategy's replicas on the GPUs):
    cuDNN (and XLA) differentiate dilated convolutions, TF's CPU kernels do
    not. The CPU route (`_dilated_conv`) pads and copies the
    activations through space_to_batch for the kernel gradient, memory a GPU
    need not spend.
    """
    device = x.device
    if not tf.executing_eagerly():
        # The innermost tf.device scope, which a function's placeholders do
        # not carry: an unused no-op shows it and is pruned.
        device = tf.raw_ops.NoOp().device or device
    return devices.runs_on_gpu(device)


def _dilated_conv(x, weights, rate, ph, pw):
    """Stride-1 convolution dilated by `rate`, padded by (ph, pw), with its own gradient.

    TF's CPU kernels cannot backpropagate through a dilated Conv2D (only
    oneDNN's can, and grappler does not always substitute them). The forward
    pass and the input gradient (a dilated convolution of the output gradient
    with the flipped, transposed kernel) are native dilated convolutions, the
    padding inside the kernel; the kernel gradient goes through space_to_batch,
    where the dilated convolution is a plain one on each of rate x rate phases.
    Measured 1.2-1.3x faster than the space_to_batch forward and backward.
    """
    kh, kw = weights.shape[0], weights.shape[1]
    gh, gw = rate * (kh - 1) - ph, rate * (kw - 1) - pw  # padding of the input gradient
    if gh < 0 or gw < 0:
        # Padding wider than the kernel's extent: the whole convolution through space_to_batch.
        x = tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        return tf.nn.atrous_conv2d(x, weights, rate, "VALID")

    @tf.custom_gradient
    def conv(x, weights):
        y = tf.nn.conv2d(x, weights, 1, [[0, 0], [ph, ph], [pw, pw], [0, 0]], dilations=rate)

        def grad(dy):
            flipped = tf.transpose(weights[::-1, ::-1], [0, 1, 3, 2])
            dx = tf.nn.conv2d(dy, flipped, 1, [[0, 0], [gh, gh], [gw, gw], [0, 0]],
                              dilations=rate)
            # Padded at the end to whole phases; the padded x exceeds dy by
            # rate * (k - 1), whole phases too, so the phases line up.
            eh, ew = -tf.shape(dy)[1] % rate, -tf.shape(dy)[2] % rate
            no_crop = tf.zeros([2, 2], tf.int32)
            phases_x = tf.space_to_batch(
                tf.pad(x, [[0, 0], [ph, ph + eh], [pw, pw + ew], [0, 0]]), [rate, rate], no_crop)
            phases_dy = tf.space_to_batch(
                tf.pad(dy, [[0, 0], [0, eh], [0, ew], [0, 0]]), [rate, rate], no_crop)
            dw = tf.raw_ops.Conv2DBackpropFilter(
                input=phases_x, filter_sizes=tf.shape(weights), out_backprop=phases_dy,
                strides=[1, 1, 1, 1], padding="VALID")
            return dx, dw
        return y, grad
    return conv(x, weights)


def _dynamic_hw(x):
    shape = tf.shape(x)
    static = x.shape
    h = static[1] if static[1] is not None else shape[1]
    w = static[2] if static[2] is not None else shape[2]
    return h, w


def _pool_geometry(size, kernel, stride, pad, ceil_mode, any_pad):
    """Output size and trailing pad for one axis; python ints or scalar tensors."""
    if isinstance(size, int):
        out = pool_output_size(size, kernel, stride, pad, ceil_mode, any_pad)
    else:
        numer = size + 2 * pad - kernel
        if ceil_mode:
            out = -((-numer) // stride) + 1
        else:
            out = numer // stride + 1
        if any_pad:
            out = tf.where((out - 1) * stride >= size + pad, out - 1, out)
    # Input extent the windows cover, measured from the start of the leading pad.
    extent = (out - 1) * stride + kernel
    after = extent - size - pad
    return out, after


def _pad_to_windows(x, kernel, stride, pad, ceil_mode, value):
    """Pads (or crops) x so that VALID pooling yields Caffe's windows."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    h, w = _dynamic_hw(x)
    any_pad = bool(ph or pw)
    oh, after_h = _pool_geometry(h, kh, sh, ph, ceil_mode, any_pad)
    ow, after_w = _pool_geometry(w, kw, sw, pw, ceil_mode, any_pad)
    pad_h = tf.maximum(after_h, 0) if not isinstance(after_h, int) else max(after_h, 0)
    pad_w = tf.maximum(after_w, 0) if not isinstance(after_w, int) else max(after_w, 0)
    if isinstance(pad_h, int) and isinstance(pad_w, int) and not (ph or pw or pad_h or pad_w):
        padded = x
    else:
        padded = tf.pad(x, [[0, 0], [ph, pad_h], [pw, pad_w], [0, 0]], constant_values=value)
    # A negative trailing pad means the last rows/columns are never covered.
    padded = padded[:, :(oh - 1) * sh + kh, :(ow - 1) * sw + kw, :]
    return padded, (h, w), (oh, ow)


def max_pool(x, kernel, stride=1, pad=0, ceil_mode=True):
    """Caffe MAX pooling. Padded cells hold -inf, so they never win."""
    kernel, stride, pad = _pair(kernel), _pair(stride), _pair(pad)
    padded, _, _ = _pad_to_windows(x, kernel, stride, pad, ceil_mode, float("-inf"))
    return tf.nn.max_pool2d(padded, kernel, stride, "VALID")


def _window_sizes(size, out, kernel, stride, pad):
    """Per-window divisor along one axis: min(start+k, size+pad) - start."""
    start = tf.range(out) * stride - pad
    end = tf.minimum(start + kernel, size + pad)
    return tf.cast(end - start, tf.float32)


def avg_pool(x, kernel, stride=1, pad=0, ceil_mode=True):
    """Caffe AVE pooling: the divisor counts cells of the pad region but not
    the cells that ceil mode adds past it."""
    kernel, stride, pad = _pair(kernel), _pair(stride), _pair(pad)
    padded, (h, w), (oh, ow) = _pad_to_windows(x, kernel, stride, pad, ceil_mode, 0.0)
    window = kernel[0] * kernel[1]
    sums = tf.nn.avg_pool2d(padded, kernel, stride, "VALID") * window
    divisor = (_window_sizes(h, oh, kernel[0], stride[0], pad[0])[:, None]
               * _window_sizes(w, ow, kernel[1], stride[1], pad[1])[None, :])
    return sums / tf.cast(divisor[None, :, :, None], sums.dtype)


def global_avg_pool(x):
    """Caffe global AVE pooling (kernel = input size), keeping 1x1 spatial dims."""
    return tf.reduce_mean(x, axis=[1, 2], keepdims=True)


def global_max_pool(x):
    return tf.reduce_max(x, axis=[1, 2], keepdims=True)


def fold_batch_norm(weights, biases, mean, variance, scale, offset, eps=defaults.BN_EPS):
    """Convolution + inference BatchNorm + Scale as one convolution: (W * a, b').

    BN(conv(x, W) + b) = conv(x, W * a) + (b - mean) * a + offset per output
    channel, with a = scale / sqrt(variance + eps). Works on tensors or arrays
    of any float dtype (variables too: gradients flow to W through W * a).

    Args:
        weights: HWIO kernel.
        biases: the convolution's biases, or None.
        mean, variance, scale, offset: per-output-channel BatchNorm/Scale parameters.
    """
    a = scale * tf.math.rsqrt(variance + eps)
    shift = -mean if biases is None else biases - mean
    return weights * a, shift * a + offset


FLOAT16_MAX = 65504.0


def fits_float16(*tensors):
    """Whether every value of the (float32) tensors, None skipped, fits float16's range: a
    scalar bool tensor."""
    return tf.reduce_all([tf.reduce_max(tf.abs(t)) <= FLOAT16_MAX
                          for t in tensors if t is not None])


def batch_moments(x, shift=None):
    """Per-channel mean, (biased) variance and element count of an NHWC float32 batch.

    Under a tf.distribute strategy with several replicas the statistics are
    those of the global batch (synchronised BatchNorm), so N replicas normalise
    exactly as one device would with the whole batch. Each replica sums
    d = x - shift and d^2 per channel and counts its elements; one all-reduce
    of these 2C + 1 numbers gives mean = shift + S1 / n and variance =
    S2 / n - (S1 / n)^2. A shift near the batch mean (the moving mean, the
    same on every replica) keeps that difference well conditioned.

    Args:
        x: NHWC float32 activations.
        shift: per-channel values equal on all replicas (no gradient flows into
            them), or None for 0. Only used with several replicas.
    Returns:
        (mean, variance, count) with count a float32 scalar.
    """
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
        return mean, variance, count
    shift = (tf.zeros(tf.shape(x)[-1:], x.dtype) if shift is None
             else tf.stop_gradient(tf.cast(shift, x.dtype)))
    d = x - shift
    sums = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat(
        [tf.reduce_sum(d, axis=[0, 1, 2]), tf.reduce_sum(tf.square(d), axis=[0, 1, 2]),
         count[tf.newaxis]], axis=0))
    total, squares, count = tf.split(sums, [tf.shape(x)[-1], tf.shape(x)[-1], 1])
    count = count[0]
    offset = total / count
    # Rounding may leave a tiny negative where the variance is ~0.
    variance = tf.maximum(squares / count - tf.square(offset), 0.0)
    return shift + offset, variance, count


def batch_norm(x, mean, variance, scale=None, offset=None, eps=defaults.BN_EPS):
    """Inference BatchNorm (+ Caffe Scale): (x - mean) / sqrt(var + eps) * scale + offset."""
    inv = tf.math.rsqrt(variance + eps)
    if scale is not None:
        inv = inv * scale
    shift = -mean * inv
    if offset is not None:
        shift = shift + offset
    return x * tf.cast(inv, x.dtype) + tf.cast(shift, x.dtype)
