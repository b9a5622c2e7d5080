"""A Caffe net as an ordered list of layers with inferred blob shapes.

`build_graph` normalises both prototxt generations (V1 `layers` with enum
types and the current `layer` with string types; `input:`/`input_dim:`/
`input_shape` or an `Input` layer), drops layers excluded from the TEST phase,
refuses layer types the converter cannot run, reads each layer's settings into
plain Python values (`Layer.attrs`), and infers every blob's shape with Caffe's
own size formulas (`deeplab_resnet.layers`). Shapes are NCHW tuples, as Caffe
has them; the TensorFlow side is NHWC.

`fuse` then groups a layer with the in-line layers that only post-process its
output (Convolution -> BatchNorm -> Scale -> ReLU), which fixes both the
parameter names of the converted weights and the statements of emitted code.
"""

import dataclasses
import math

from deeplab_resnet import layers as caffe_math
from kaffe import caffe_pb
from kaffe.errors import KaffeError

SUPPORTED = ("Input", "Convolution", "BatchNorm", "Scale", "ReLU", "Pooling", "Eltwise",
             "InnerProduct", "Softmax", "Concat", "Dropout")
# Layers that compute one output element from the same element of the input:
# they may run in place (top == bottom).
ELEMENTWISE = ("BatchNorm", "Scale", "ReLU", "Dropout")
# Learned values one layer may hold (4 GiB of float32; VGG's largest layer has
# 1e8): a prototxt asking for more is refused before anything is allocated.
MAX_LAYER_PARAMETERS = 2 ** 30


@dataclasses.dataclass
class Layer:
    """One Caffe layer after normalisation.

    Attributes:
        name, type: Caffe layer name and (current-format) type string.
        bottoms, tops: blob names.
        attrs: the layer's settings as Python values (see `_infer_*`).
        in_shapes, out_shapes: NCHW shapes of bottoms and tops.
        blob_shapes: shapes of the learned blobs Caffe stores for the layer.
    """
    name: str
    type: str
    bottoms: tuple
    tops: tuple
    proto: object = dataclasses.field(repr=False, default=None)
    attrs: dict = dataclasses.field(default_factory=dict)
    in_shapes: tuple = ()
    out_shapes: tuple = ()
    blob_shapes: tuple = ()


@dataclasses.dataclass
class Graph:
    """A net: its input blobs (name -> NCHW shape) and its layers in Caffe order."""
    name: str
    source: str
    inputs: dict
    layers: list
    outputs: tuple = ()

    def layer(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def blob_shapes(self):
        """Final shape of every blob name (after in-place layers)."""
        shapes = dict(self.inputs)
        for layer in self.layers:
            shapes.update(zip(layer.tops, layer.out_shapes))
        return shapes


_TEST_PHASE = caffe_pb.NetParameter.DESCRIPTOR.file.enum_types_by_name["Phase"].values_by_name["TEST"].number


def _rule_met(rule):
    """Caffe's NetStateRule check against the deploy state (phase TEST, level 0, no stages)."""
    if rule.HasField("phase") and rule.phase != _TEST_PHASE:
        return False
    if rule.HasField("min_level") and 0 < rule.min_level:
        return False
    if rule.HasField("max_level") and 0 > rule.max_level:
        return False
    if len(rule.stage):
        return False
    return True


def _included(proto):
    if len(proto.include):
        return any(_rule_met(rule) for rule in proto.include)
    if len(proto.exclude):
        return not any(_rule_met(rule) for rule in proto.exclude)
    return True


def _net_inputs(net, source):
    """Blob shapes of the old-style `input:` declarations."""
    names = list(net.input)
    if not names:
        return {}
    if len(net.input_shape):
        if len(net.input_shape) != len(names):
            raise KaffeError(f"{source}: {len(names)} inputs but {len(net.input_shape)} input_shape")
        shapes = [tuple(int(d) for d in s.dim) for s in net.input_shape]
    else:
        dims = [int(d) for d in net.input_dim]
        if len(dims) != 4 * len(names):
            raise KaffeError(f"{source}: {len(names)} inputs need {4 * len(names)} input_dim "
                             f"values, found {len(dims)}")
        shapes = [tuple(dims[4 * i: 4 * i + 4]) for i in range(len(names))]
    for name, shape in zip(names, shapes):
        if any(d < 1 for d in shape):
            raise KaffeError(f"{source}: input '{name}' has a non-positive dimension {shape}")
    return dict(zip(names, shapes))


def _raw_layers(net, source):
    if len(net.layer) and len(net.layers):
        raise KaffeError(f"{source}: mixes 'layer' and V1 'layers' definitions")
    out = []
    for index, proto in enumerate(net.layer if len(net.layer) else net.layers):
        if not _included(proto):
            continue
        if isinstance(proto, caffe_pb.V1LayerParameter):
            type_name = caffe_pb.v1_type_name(proto.type)
        else:
            type_name = proto.type
        name = proto.name or f"layer{index}"
        out.append(Layer(name=name, type=type_name, bottoms=tuple(proto.bottom),
                         tops=tuple(proto.top), proto=proto))
    return out


def build_graph(net, source="<prototxt>"):
    """Normalises a `NetParameter` into a shape-checked `Graph`.

    Args:
        net: parsed prototxt.
        source: file name for error messages.
    Raises:
        KaffeError: unsupported layer type, unknown bottom blob, bad settings or
            shapes; the message names the layer.
    """
    inputs = _net_inputs(net, source)
    layer_list = _raw_layers(net, source)
    seen = set()
    for layer in layer_list:
        if layer.type not in SUPPORTED:
            raise KaffeError(f"{source}: layer '{layer.name}' has type '{layer.type}', which "
                             f"the converter does not support (supported: {', '.join(SUPPORTED)})")
        if layer.name in seen:
            raise KaffeError(f"{source}: two layers are named '{layer.name}'")
        seen.add(layer.name)
    shapes = dict(inputs)
    graph_inputs = dict(inputs)
    available = list(inputs)  # Caffe's rule for net outputs: tops never consumed afterwards
    for layer in layer_list:
        for bottom in layer.bottoms:
            if bottom not in shapes:
                raise KaffeError(f"{source}: layer '{layer.name}' reads blob '{bottom}', which no "
                                 "earlier layer or input produces")
        layer.in_shapes = tuple(shapes[b] for b in layer.bottoms)
        try:
            _INFER[layer.type](layer)
        except _LayerError as exc:
            raise KaffeError(f"{source}: layer '{layer.name}' ({layer.type}): {exc}") from None
        count = sum(math.prod(shape) for shape in layer.blob_shapes)
        if count > MAX_LAYER_PARAMETERS:
            raise KaffeError(f"{source}: layer '{layer.name}' ({layer.type}) would have {count} "
                             f"parameters, more than the {MAX_LAYER_PARAMETERS} allowed: an "
                             "absurd num_output or input size?")
        if layer.type == "Input":
            graph_inputs.update(zip(layer.tops, layer.out_shapes))
        for bottom in layer.bottoms:
            if bottom in available:
                available.remove(bottom)
        for top, shape in zip(layer.tops, layer.out_shapes):
            shapes[top] = shape
            if top not in available:
                available.append(top)
    if not graph_inputs:
        raise KaffeError(f"{source}: the net declares no input (no 'input:' and no Input layer)")
    return Graph(name=net.name, source=source, inputs=graph_inputs, layers=layer_list,
                 outputs=tuple(available))


class _LayerError(Exception):
    pass


def _check(condition, message):
    if not condition:
        raise _LayerError(message)


def _counts(layer, bottoms, tops=1):
    if bottoms is not None:
        _check(len(layer.bottoms) == bottoms, f"expects {bottoms} bottom blob(s), has {len(layer.bottoms)}")
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
    # The proto holds a float32; 7 significant digits give back the written value (1e-5, not 9.99999975e-06).
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
        _check(shape == first, f"bottom '{name}' has shape {shape}, '{layer.bottoms[0]}' has {first}")
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
        _check(len(shape) == len(first) and all(a == b for i, (a, b) in enumerate(zip(shape, first)) if i != axis),
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


# -- fusion ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Step:
    """A layer and the in-line layers fused into it.

    `bn`/`scale`/`relu` are Layers whose only input is the previous member's
    output and which are that output's only reader, so no other layer can
    observe the intermediate value; `top` is the blob the whole step writes.
    """
    layer: Layer
    bn: Layer = None
    scale: Layer = None
    relu: Layer = None

    @property
    def members(self):
        return [m for m in (self.layer, self.bn, self.scale, self.relu) if m is not None]

    @property
    def tops(self):
        return self.members[-1].tops

    @property
    def bottoms(self):
        return self.layer.bottoms


def _readers(graph):
    """For each layer, the indices of the layers reading each of its top versions."""
    current = {name: ("input", name) for name in graph.inputs}
    readers = {}
    versions = []
    for index, layer in enumerate(graph.layers):
        bottoms = []
        for bottom in layer.bottoms:
            version = current[bottom]
            readers.setdefault(version, []).append(index)
            bottoms.append(version)
        tops = []
        for t, top in enumerate(layer.tops):
            version = (index, t)
            current[top] = version
            tops.append(version)
        versions.append((bottoms, tops))
    return versions, readers


def fuse(graph):
    """Groups the layers of `graph` into `Step`s (Convolution + BatchNorm + Scale + ReLU, ...)."""
    versions, readers = _readers(graph)
    layer_list = graph.layers

    def sole_follower(index, wanted):
        """The layer that alone reads layer `index`'s single output, if of type `wanted`."""
        if len(layer_list[index].tops) != 1:
            return None
        users = readers.get(versions[index][1][0], [])
        if len(users) != 1:
            return None
        follower = layer_list[users[0]]
        if follower.type != wanted or len(follower.bottoms) != 1:
            return None
        return users[0]

    steps, taken = [], set()
    for index, layer in enumerate(layer_list):
        if index in taken:
            continue
        step, last = Step(layer), index
        if layer.type == "Convolution":
            nxt = sole_follower(last, "BatchNorm")
            if nxt is not None:
                step.bn, last = layer_list[nxt], nxt
                taken.add(nxt)
        if layer.type == "BatchNorm" or step.bn is not None:
            nxt = sole_follower(last, "Scale")
            if nxt is not None:
                step.scale, last = layer_list[nxt], nxt
                taken.add(nxt)
        if layer.type in ("Convolution", "BatchNorm", "Scale", "Eltwise", "InnerProduct"):
            nxt = sole_follower(last, "ReLU")
            if nxt is not None:
                step.relu, last = layer_list[nxt], nxt
                taken.add(nxt)
        steps.append(step)
    return steps


def bn_layer(step):
    """The BatchNorm layer of a step (fused after a conv, or the step itself)."""
    if step.layer.type == "BatchNorm":
        return step.layer
    return step.bn


def param_shapes(steps):
    """{parameter name: TF-layout shape} of the converted weights, in step order.

    Naming (deeplab_resnet.model's scheme): `<conv>/weights` (HWIO) and
    `<conv>/biases`; a BatchNorm with its fused Scale: `<bn>/mean`, `/variance`,
    `/scale`, `/offset`; a standalone Scale: `<scale>/scale`, `<scale>/offset`;
    InnerProduct: `<fc>/weights` (in, out) and `<fc>/biases`.
    """
    shapes = {}
    for step in steps:
        layer = step.layer
        if layer.type == "Convolution":
            o, i, kh, kw = layer.blob_shapes[0]
            shapes[f"{layer.name}/weights"] = (kh, kw, i, o)
            if layer.attrs["bias"]:
                shapes[f"{layer.name}/biases"] = (o,)
        elif layer.type == "InnerProduct":
            a = layer.attrs
            shapes[f"{layer.name}/weights"] = (math.prod(a["in_shape"]), a["num_output"])
            if a["bias"]:
                shapes[f"{layer.name}/biases"] = (a["num_output"],)
        elif layer.type == "Scale":
            c = layer.attrs["channels"]
            shapes[f"{layer.name}/scale"] = (c,)
            shapes[f"{layer.name}/offset"] = (c,)
        bn = bn_layer(step)
        if bn is not None:
            c = bn.attrs["channels"]
            for key in ("mean", "variance", "scale", "offset"):
                shapes[f"{bn.name}/{key}"] = (c,)
    return shapes
