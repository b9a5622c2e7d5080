"""Where logits, labels and images meet: DeepLab's align-corners geometry, written once.

Logit i of a network with output stride 8 is centred on input pixel 8i (conv1,
pool1 and res3a each halve the grid with windows centred by their padding).
DeepLab's Caffe `Interp` layer keeps that alignment by mapping the first and
last samples of two grids onto each other ("align corners"): an output of n
samples over an input of m reads input position i*(m-1)/(n-1). Used for

* the label shrink (`shrink_labels`): logit (i, j) takes the label at the
  nearest pixel to (i*(H-1)/(h-1), j*(W-1)/(w-1)) -- exactly (8i, 8j) when
  H = 8k+1;
* the MSC net (`resize_align_corners`, `msc_input_size`): inputs shrunk to
  (in-1)*s + 1 (321 -> 241, 161), the smaller logits zoomed back to the
  reference logits;
* logits to image (`logits_to_image`): image pixel p reads logit position
  p/8, clamped at the last logit -- DeepLab's test protocol (pad to 8k+1,
  zoom x8 with align corners, crop) at any image size.

TF2's `tf.image.resize` uses half-pixel centres instead, which stretches
every map by about 2% about its centre. Positions are rationals i*num/den
computed in integers, so the sample points are exact.
"""

import fractions

import tensorflow as tf

OUTPUT_STRIDE = 8
# Scales are read as fractions with at most this denominator (1.3 -> 13/10).
MAX_SCALE_DENOMINATOR = 100


def _grid(count):
    return tf.range(count, dtype=tf.int64)


def _linear_taps(out_size, in_size, num, den):
    """Bilinear taps (lo, hi, frac) reading input position i*num/den, clamped to the last sample.

    Args:
        out_size, in_size: int or int tensors.
        num, den: int64 tensors, den > 0.
    """
    scaled = _grid(out_size) * num
    lo = scaled // den
    frac = tf.cast(scaled - lo * den, tf.float64) / tf.cast(den, tf.float64)
    last = tf.cast(in_size, tf.int64) - 1
    beyond = lo >= last
    lo = tf.minimum(lo, last)
    hi = tf.minimum(lo + 1, last)
    return lo, hi, tf.where(beyond, tf.zeros_like(frac), frac)


def _interpolate(values, out_size, num, den, axis):
    in_size = tf.shape(values, out_type=tf.int64)[axis]
    lo, hi, frac = _linear_taps(out_size, in_size, num, den)
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    frac = tf.reshape(tf.cast(frac, values.dtype), shape)
    low = tf.gather(values, lo, axis=axis)
    return low + (tf.gather(values, hi, axis=axis) - low) * frac


def _corner_ratio(in_size, out_size):
    """(num, den) of align-corners sampling: (in-1)/(out-1); an output of one sample reads 0."""
    num = tf.cast(in_size, tf.int64) - 1
    den = tf.cast(out_size, tf.int64) - 1
    single = den <= 0
    return tf.where(single, tf.zeros_like(num), num), tf.where(single, tf.ones_like(den), den)


def spatial_size(tensor):
    """(height, width) of an NHWC tensor: python ints where static, else int32 tensors."""
    static = tensor.shape[1:3]
    if static.is_fully_defined():
        return static.as_list()
    shape = tf.shape(tensor)
    return [shape[1], shape[2]]


def resize_align_corners(images, size):
    """Bilinear resize of NHWC `images` to `size` (h, w) with Caffe Interp's align-corners geometry.

    Output (i, j) reads input position (i*(H-1)/(h-1), j*(W-1)/(w-1)). Keeps the
    input's dtype; differentiable.
    """
    (in_h, in_w), (out_h, out_w) = spatial_size(images), (size[0], size[1])
    num, den = _corner_ratio(in_h, out_h)
    rows = _interpolate(images, out_h, num, den, axis=1)
    num, den = _corner_ratio(in_w, out_w)
    return _interpolate(rows, out_w, num, den, axis=2)


def logits_to_image(logits, size, stride=OUTPUT_STRIDE):
    """Logits [N, h, w, C] -> [N, H, W, C] at image size `size`: pixel p reads logit p/stride.

    Bilinear; positions past the last logit read the last logit. For an image
    of 8k+1 pixels this is the align-corners zoom x8; for any other size it is
    DeepLab's pad-zoom-crop geometry, so a prediction is never stretched.
    """
    one, stride = tf.constant(1, tf.int64), tf.constant(stride, tf.int64)
    rows = _interpolate(logits, size[0], one, stride, axis=1)
    return _interpolate(rows, size[1], one, stride, axis=2)


def shrink_labels(labels, size):
    """Integer labels [N, H, W] -> [N, h, w], DeepLab's label shrink.

    Output (i, j) takes the label pixel nearest to (i*(H-1)/(h-1), j*(W-1)/(w-1))
    (halves round up); with h == 1 it takes row 0. Values are copied, never mixed.
    """
    (in_h, in_w), (out_h, out_w) = spatial_size(labels[..., None]), (size[0], size[1])
    for axis, in_size, out_size in ((1, in_h, out_h), (2, in_w, out_w)):
        num, den = _corner_ratio(in_size, out_size)
        nearest = (2 * _grid(out_size) * num + den) // (2 * den)
        labels = tf.gather(labels, nearest, axis=axis)
    return labels


def msc_input_size(size, scale):
    """One side of DeepLab's MSC input at `scale`, as its Interp layer sizes it (321 -> 241, 161).

    With scale = zoom/shrink in lowest terms (0.75 = 3/4, 0.5 = 1/2), Interp
    gives (size-1) // shrink * zoom + 1: (size-1)*scale + 1 whenever shrink
    divides size-1 (any 8k+1 crop for the scales 0.75 and 0.5).

    Args:
        size: python int or int tensor.
        scale: python float.
    """
    ratio = fractions.Fraction(scale).limit_denominator(MAX_SCALE_DENOMINATOR)
    if ratio == 1:
        return size
    scaled = (size - 1) // ratio.denominator * ratio.numerator + 1
    return max(1, scaled) if isinstance(size, int) else tf.maximum(1, scaled)
