"""Caffe's output-size formulas, in plain Python (shape inference and the TF layers share them)."""

import math


def conv_output_size(size, kernel, stride=1, pad=0, dilation=1):
    """Caffe's convolution output size: floor((in + 2p - (d(k-1)+1)) / s) + 1."""
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def pool_output_size(size, kernel, stride=1, pad=0, ceil_mode=True, any_pad=None):
    """Caffe's pooling output size, ceil mode with the last-window rule.

    The last window must start inside the image or its leading pad, never in
    the trailing pad; Caffe drops it otherwise. Caffe applies that rule when
    the layer has any padding (`any_pad`, default: this axis is padded).
    """
    if any_pad is None:
        any_pad = pad > 0
    if ceil_mode:
        out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    else:
        out = (size + 2 * pad - kernel) // stride + 1
    if any_pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out
