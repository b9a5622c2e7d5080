"""A Caffe net as an ordered list of layers with inferred blob shapes.

`build_graph` normalises both prototxt generations (V1 `layers` with enum
types and the current `layer` with string types; `input:`/`input_dim:`/
`input_shape` or an `Input` layer), drops layers excluded from the TEST phase,
refuses layer types the converter cannot run, reads each layer's settings into
plain Python values (`Layer.attrs`), and infers every blob's shape with Caffe's
own size formulas (`kaffe.layer_shapes`, one layer at a time). Shapes are NCHW
tuples, as Caffe has them; the TensorFlow side is NHWC.

`kaffe.fusion` then groups each layer with the in-line layers that only
post-process its output.
"""

import dataclasses
import math

from kaffe import caffe_pb, layer_shapes
from kaffe.errors import KaffeError

SUPPORTED = ("Input", "Convolution", "BatchNorm", "Scale", "ReLU", "Pooling", "Eltwise",
             "InnerProduct", "Softmax", "Concat", "Dropout")
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


_PHASES = caffe_pb.NetParameter.DESCRIPTOR.file.enum_types_by_name["Phase"]
_TEST_PHASE = _PHASES.values_by_name["TEST"].number


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
            raise KaffeError(f"{source}: {len(names)} inputs but "
                             f"{len(net.input_shape)} input_shape")
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
            layer_shapes.infer(layer)
        except layer_shapes.LayerError as exc:
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
