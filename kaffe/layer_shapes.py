"""The shapes of one Caffe layer's outputs and parameters, by Caffe's own rules.

`infer(layer)` reads the layer's settings from its proto into `layer.attrs`, checks them
against its input shapes (`layer.in_shapes`) and sets `layer.out_shapes` and
`layer.blob_shapes`, with Caffe's size formulas (`kaffe.sizes`); `kaffe.graph` runs it for
every layer in order and names the layer in the error.
"""

import math

from kaffe import sizes as caffe_math


class LayerError(Exception):
    """A layer whose settings or input shapes Caffe would refuse (the graph names the layer)."""


def _check(condition, message):
    if not condition:
        raise LayerError(message)


def _counts(layer, bottoms, tops=1):
    if bottoms is not None:
        _check(len(layer.bottoms) == bottoms,
               f"expects {bottoms} bottom blob(s), has {len(layer.bottoms)}")
    _check(len(layer.tops) == tops, f"expects {tops} top blob(s), has {len(layer.tops)}")


def _spatial_param(param, name, default, required=False, field_name=None):
    """(h, w) from `name_h`/`name_w` or the repeated/optional `field_name` (default `name`)."""
    h_name, w_name = f"{name}_h", f"{name}_w"
    has_h, has_w = param.HasField(h_name), param.HasField(w_name)
    if has_h or has_w:
        _check(has_h and has_w, f"{h_name} and {w_name} must be given together")
        return int(getattr(param, h_name)), int(getattr(param, w_name))
    name = field_name or name
    value = getattr(param, name)
    field = param.DESCRIPTOR.fields_by_name[name]
    # protobuf >= 5.29 has is_repeated; older releases only `label`.
    repeated = (field.is_repeated if hasattr(field, "is_repeated")
                else field.label == field.LABEL_REPEATED)
    if repeated:
        values = [int(v) for v in value]
        _check(len(values) <= 2, f"{name} has {len(values)} values (2D only)")
        if not values:
            _check(not required, f"no {name} given")
            return default, default
        return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    if not param.HasField(name):
        _check(not required, f"no {name} given")
        return default, default
    return int(value), int(value)


def _norm_axis(axis, ndim):
    _check(-ndim <= axis < ndim, f"axis {axis} out of range for a {ndim}-D blob")
    return axis % ndim


def _infer_input(layer):
    _check(not layer.bottoms, "an Input layer takes no bottom")
    shapes = [tuple(int(d) for d in s.dim) for s in layer.proto.input_param.shape]
    _check(len(shapes) in (1, len(layer.tops)),
           f"{len(shapes)} shapes for {len(layer.tops)} tops (give 1 or one per top)")
    if len(shapes) == 1:
        shapes = shapes * len(layer.tops)
    for shape in shapes:
        _check(shape and all(d > 0 for d in shape), f"bad input shape {shape}")
    layer.out_shapes = tuple(shapes)


def _infer_convolution(layer):
    _counts(layer, 1)
    p = layer.proto.convolution_param
    shape = layer.in_shapes[0]
    _check(len(shape) == 4, f"needs a 4-D (N, C, H, W) input, got {shape}")
    _check(p.axis in (1, -3), f"axis {p.axis} not supported (only channels, 1)")
    kernel = _spatial_param(p, "kernel", None, required=True, field_name="kernel_size")
    stride = _spatial_param(p, "stride", 1)
    pad = _spatial_param(p, "pad", 0)
    dilation = [int(v) for v in p.dilation] or [1]
    _check(len(dilation) <= 2, "dilation has more than 2 values")
    dilation = (dilation[0], dilation[-1])
    _check(p.HasField("num_output") and p.num_output > 0, "num_output must be positive")
    num_output, group = int(p.num_output), int(p.group)
    _check(group >= 1 and shape[1] % group == 0 and num_output % group == 0,
           f"group {group} does not divide input channels {shape[1]} and num_output {num_output}")
    _check(min(kernel) > 0 and min(stride) > 0 and min(dilation) > 0,
           "kernel, stride and dilation must be positive")
    out_hw = tuple(caffe_math.conv_output_size(s, k, st, pd, d)
                   for s, k, st, pd, d in zip(shape[2:], kernel, stride, pad, dilation))
    _check(min(out_hw) >= 1, f"input {shape[2:]} is too small (output {out_hw})")
    layer.attrs = dict(num_output=num_output, kernel=kernel, stride=stride, pad=pad,
                       dilation=dilation, group=group, bias=bool(p.bias_term))
    layer.out_shapes = ((shape[0], num_output) + out_hw,)
    layer.blob_shapes = ((num_output, shape[1] // group) + kernel,)
    if p.bias_term:
        layer.blob_shapes += ((num_output,),)


def _infer_pooling(layer):
    _counts(layer, 1)
    p = layer.proto.pooling_param
    shape = layer.in_shapes[0]
    _check(len(shape) == 4, f"needs a 4-D (N, C, H, W) input, got {shape}")
    method = p.DESCRIPTOR.fields_by_name["pool"].enum_type.values_by_number[p.pool].name
    _check(method in ("MAX", "AVE"), f"{method} pooling is not supported (MAX, AVE only)")
    pad = _spatial_param(p, "pad", 0)
    stride = _spatial_param(p, "stride", 1)
    ceil_mode = p.round_mode == 0
    if p.global_pooling:
        _check(pad == (0, 0) and stride == (1, 1), "global pooling needs pad 0 and stride 1")
        _check(not (p.HasField("kernel_size") or p.HasField("kernel_h")),
               "global pooling takes no kernel size")
        kernel = tuple(shape[2:])
        out_hw = (1, 1)
    else:
        kernel = _spatial_param(p, "kernel", None, required=True, field_name="kernel_size")
        _check(min(kernel) > 0 and min(stride) > 0, "kernel and stride must be positive")
        _check(pad[0] < kernel[0] and pad[1] < kernel[1], "pad must be smaller than the kernel")
        any_pad = bool(pad[0] or pad[1])
        out_hw = tuple(caffe_math.pool_output_size(s, k, st, pd, ceil_mode, any_pad)
                       for s, k, st, pd in zip(shape[2:], kernel, stride, pad))
        _check(min(out_hw) >= 1, f"input {shape[2:]} is too small for kernel {kernel}")
    layer.attrs = dict(method=method, kernel=kernel, stride=stride, pad=pad,
                       global_pooling=bool(p.global_pooling), ceil_mode=ceil_mode)
    layer.out_shapes = (shape[:2] + out_hw,)


def _infer_batch_norm(layer):
    _counts(layer, 1)
    p = layer.proto.batch_norm_param
    _check(not (p.HasField("use_global_stats") and not p.use_global_stats),
           "use_global_stats: false (batch statistics) cannot be converted for inference")
    shape = layer.in_shapes[0]
    _check(len(shape) >= 2, f"needs a blob with channels, got {shape}")
    channels = shape[1]
    # The proto holds a float32; 7 significant digits give back the written value
    # (1e-5, not 9.99999975e-06).
    layer.attrs = dict(eps=float(f"{p.eps:.7g}"), channels=channels)
    layer.out_shapes = (shape,)
    layer.blob_shapes = ((channels,), (channels,), (1,))


def _infer_scale(layer):
    _check(len(layer.bottoms) == 1, "Scale with a second bottom (multiplier blob) is not supported")
    _counts(layer, 1)
    p = layer.proto.scale_param
    shape = layer.in_shapes[0]
    _check(len(shape) >= 2 and _norm_axis(p.axis, len(shape)) == 1 and p.num_axes == 1,
           "only per-channel Scale (axis 1, num_axes 1) is supported")
    channels = shape[1]
    layer.attrs = dict(bias=bool(p.bias_term), channels=channels)
    layer.out_shapes = (shape,)
    layer.blob_shapes = ((channels,),) + (((channels,),) if p.bias_term else ())


def _infer_relu(layer):
    _counts(layer, 1)
    layer.attrs = dict(negative_slope=float(layer.proto.relu_param.negative_slope))
    layer.out_shapes = layer.in_shapes


def _infer_dropout(layer):
    _counts(layer, 1)
    p = layer.proto.dropout_param
    # At test time Caffe copies the input, scaled by 1 - ratio only when the
    # (fork-only) scale_train flag is off.
    layer.attrs = dict(factor=1.0 if p.scale_train else 1.0 - float(p.dropout_ratio))
    layer.out_shapes = layer.in_shapes


def _infer_softmax(layer):
    _counts(layer, 1)
    shape = layer.in_shapes[0]
    layer.attrs = dict(axis=_norm_axis(layer.proto.softmax_param.axis, len(shape)))
    layer.out_shapes = layer.in_shapes


def _infer_eltwise(layer):
    _check(len(layer.bottoms) >= 2, "needs at least 2 bottoms")
    _counts(layer, None)
    p = layer.proto.eltwise_param
    op = p.DESCRIPTOR.fields_by_name["operation"].enum_type.values_by_number[p.operation].name
    coeff = [float(c) for c in p.coeff]
    _check(not coeff or len(coeff) == len(layer.bottoms),
           f"{len(coeff)} coeff values for {len(layer.bottoms)} bottoms")
    _check(not coeff or op == "SUM", "coeff is only allowed with operation SUM")
    first = layer.in_shapes[0]
    for name, shape in zip(layer.bottoms, layer.in_shapes):
        _check(shape == first,
               f"bottom '{name}' has shape {shape}, '{layer.bottoms[0]}' has {first}")
    layer.attrs = dict(operation=op, coeff=tuple(coeff) or None)
    layer.out_shapes = (first,)


def _infer_concat(layer):
    _check(len(layer.bottoms) >= 1, "needs a bottom")
    _counts(layer, None)
    p = layer.proto.concat_param
    first = layer.in_shapes[0]
    axis = p.axis if (p.HasField("axis") or not p.HasField("concat_dim")) else p.concat_dim
    axis = _norm_axis(axis, len(first))
    total = 0
    for name, shape in zip(layer.bottoms, layer.in_shapes):
        _check(len(shape) == len(first)
               and all(a == b for i, (a, b) in enumerate(zip(shape, first)) if i != axis),
               f"bottom '{name}' has shape {shape}, incompatible with {first} on axis {axis}")
        total += shape[axis]
    layer.attrs = dict(axis=axis)
    layer.out_shapes = (first[:axis] + (total,) + first[axis + 1:],)


def _infer_inner_product(layer):
    _counts(layer, 1)
    p = layer.proto.inner_product_param
    shape = layer.in_shapes[0]
    _check(_norm_axis(p.axis, len(shape)) == 1, "only axis 1 is supported")
    _check(p.HasField("num_output") and p.num_output > 0, "num_output must be positive")
    num_output = int(p.num_output)
    fan_in = math.prod(shape[1:])
    layer.attrs = dict(num_output=num_output, bias=bool(p.bias_term), transpose=bool(p.transpose),
                       in_shape=tuple(shape[1:]))
    layer.out_shapes = ((shape[0], num_output),)
    layer.blob_shapes = ((fan_in, num_output) if p.transpose else (num_output, fan_in),)
    if p.bias_term:
        layer.blob_shapes += ((num_output,),)


_INFER = {
    "Input": _infer_input, "Convolution": _infer_convolution, "Pooling": _infer_pooling,
    "BatchNorm": _infer_batch_norm, "Scale": _infer_scale, "ReLU": _infer_relu,
    "Dropout": _infer_dropout, "Softmax": _infer_softmax, "Eltwise": _infer_eltwise,
    "Concat": _infer_concat, "InnerProduct": _infer_inner_product,
}


def infer(layer):
    """Sets `layer`'s attrs, output and parameter shapes; a LayerError for what Caffe refuses."""
    _INFER[layer.type](layer)
