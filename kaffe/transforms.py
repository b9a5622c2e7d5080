"""Caffe blobs <-> TensorFlow parameters, both directions side by side.

`layer_blobs` pulls each layer's blobs out of a caffemodel, matching layers by
name and checking the blob count and shapes against what the prototxt implies
(a caffemodel written for another net fails here, naming the layer).
`make_params` then applies the transforms: BatchNorm's scale-factor division,
BatchNorm + Scale fusion, and the layout changes (convolution OIHW -> HWIO;
InnerProduct rows from the C-H-W order of Caffe's flattened input to the
H-W-C order of TensorFlow's NHWC flatten). `params_to_blobs` is the inverse,
each layout change written next to its forward form.

Parameter naming (`param_name`): `<conv>/weights` (HWIO) and `<conv>/biases`;
a BatchNorm with its fused Scale: `<bn>/mean`, `/variance`, `/scale`,
`/offset`; a standalone Scale: `<scale>/scale`, `<scale>/offset`;
InnerProduct: `<fc>/weights` (in, out) and `<fc>/biases`. It is the naming
of deeplab_resnet's checkpoints, whose converter glue checks the two agree.
"""

import math

import numpy as np

from kaffe import caffe_pb
from kaffe.errors import KaffeError
from kaffe.fusion import bn_layer


def blob_shape(blob):
    """(shape, legacy) of a BlobProto from its header; legacy: from num/channels/height/width."""
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim), False
    return (int(blob.num), int(blob.channels), int(blob.height), int(blob.width)), True


def blob_array(blob, what):
    """A BlobProto as a float32 array of its declared shape.

    Args:
        blob: a `caffe.BlobProto`.
        what: description for error messages ("file: layer 'x' blob 0").
    Returns:
        (array, legacy) where legacy tells the shape came from num/channels/height/width.
    """
    shape, legacy = blob_shape(blob)
    if len(blob.double_data):
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        values = np.asarray(blob.data, dtype=np.float32)
    count = math.prod(shape)
    if values.size != count:
        raise KaffeError(f"{what} holds {values.size} values but its shape {shape} needs {count} "
                         "(truncated or corrupt caffemodel?)")
    return values.reshape(shape), legacy


def caffemodel_layers(weights):
    """{name: (type, [BlobProto])} of a parsed caffemodel (current or V1 format)."""
    out = {}
    for proto in weights.layer:
        out[proto.name] = (proto.type, list(proto.blobs))
    for proto in weights.layers:
        out[proto.name] = (caffe_pb.v1_type_name(proto.type), list(proto.blobs))
    return out


def check_blob_shapes(blobs, expected_shapes, what, source):
    """Checks a layer's blob count and shapes from the blobs' headers (no value is read).

    Args:
        blobs: the layer's `BlobProto`s.
        expected_shapes: the Caffe shape each blob must have.
        what: "file: layer 'x'", for messages.
        source: what implies the shapes (a prototxt, an architecture), for messages.
    Raises:
        KaffeError: another number of blobs, or a blob of another shape.
    """
    if len(blobs) != len(expected_shapes):
        raise KaffeError(f"{what} has {len(blobs)} blobs, {source} expects "
                         f"{len(expected_shapes)}")
    for i, (blob, expected) in enumerate(zip(blobs, expected_shapes)):
        shape, legacy = blob_shape(blob)
        # Legacy 4-D shapes pad the real shape with leading 1s (Caffe compares them so).
        want = (1,) * (4 - len(expected)) + tuple(expected) if legacy else tuple(expected)
        if shape != want:
            raise KaffeError(f"{what} blob {i} has shape {shape}, {source} implies "
                             f"{tuple(expected)}")


def checked_blobs(blobs, expected_shapes, what, source):
    """A layer's blobs as arrays of the expected Caffe shapes (see `check_blob_shapes`)."""
    check_blob_shapes(blobs, expected_shapes, what, source)
    return [blob_array(blob, f"{what} blob {i}")[0].reshape(expected)
            for i, (blob, expected) in enumerate(zip(blobs, expected_shapes))]


def layer_blobs(graph, weights, path):
    """{layer name: [Caffe-layout arrays]} for every layer of `graph` that has weights.

    Args:
        graph: the prototxt's `Graph`.
        weights: the parsed caffemodel (`NetParameter`).
        path: its file name, for messages.
    Raises:
        KaffeError: a layer missing from the caffemodel, of another type, or
            with blobs whose number or shapes differ from the prototxt's.
    """
    found = caffemodel_layers(weights)
    wanted = [layer for layer in graph.layers if layer.blob_shapes]
    if wanted and not any(layer.name in found for layer in wanted):
        raise KaffeError(f"{path}: caffemodel has none of the layers of {graph.source} "
                         f"(e.g. '{wanted[0].name}'): it was written for a different net")
    out = {}
    for layer in wanted:
        if layer.name not in found:
            raise KaffeError(f"{path}: caffemodel has no layer '{layer.name}' "
                             f"(written for a different prototxt than {graph.source}?)")
        stored_type, blobs = found[layer.name]
        if stored_type and stored_type != layer.type:
            raise KaffeError(f"{path}: layer '{layer.name}' is a {stored_type} in the "
                             f"caffemodel but a {layer.type} in {graph.source}")
        out[layer.name] = checked_blobs(blobs, layer.blob_shapes,
                                        f"{path}: layer '{layer.name}'", graph.source)
    return out


def param_name(layer, kind):
    """`<layer>/<kind>`: the name of a converted parameter (kind: weights, biases, mean, ...)."""
    return f"{layer}/{kind}"


BN_KINDS = ("mean", "variance", "scale", "offset")


def param_shapes(steps):
    """{parameter name: TF-layout shape} of the converted weights, in step order."""
    shapes = {}
    for step in steps:
        layer = step.layer
        if layer.type == "Convolution":
            o, i, kh, kw = layer.blob_shapes[0]
            shapes[param_name(layer.name, "weights")] = (kh, kw, i, o)
            if layer.attrs["bias"]:
                shapes[param_name(layer.name, "biases")] = (o,)
        elif layer.type == "InnerProduct":
            a = layer.attrs
            shapes[param_name(layer.name, "weights")] = (math.prod(a["in_shape"]), a["num_output"])
            if a["bias"]:
                shapes[param_name(layer.name, "biases")] = (a["num_output"],)
        elif layer.type == "Scale":
            c = layer.attrs["channels"]
            shapes[param_name(layer.name, "scale")] = (c,)
            shapes[param_name(layer.name, "offset")] = (c,)
        bn = bn_layer(step)
        if bn is not None:
            for kind in BN_KINDS:
                shapes[param_name(bn.name, kind)] = (bn.attrs["channels"],)
    return shapes


# -- layouts: Caffe -> TF, then TF -> Caffe -------------------------------------------------


def bn_statistics(blobs):
    """Caffe BatchNorm blobs (mean*f, var*f, [f]) -> (mean, variance); f == 0 gives 0."""
    factor = float(blobs[2].reshape(-1)[0])
    inv = 0.0 if factor == 0 else 1.0 / factor
    inv = np.float32(inv)
    return (blobs[0] * inv).astype(np.float32), (blobs[1] * inv).astype(np.float32)


def caffe_bn_statistics(mean, variance, factor):
    """(mean, variance) -> Caffe BatchNorm blobs (mean*f, var*f, [f])."""
    factor = np.float32(factor)
    return [mean * factor, variance * factor, np.array([factor], np.float32)]


def conv_weights(weights):
    """Caffe (out, in/group, kh, kw) -> TF HWIO (kh, kw, in/group, out)."""
    return np.ascontiguousarray(weights.transpose(2, 3, 1, 0))


def caffe_conv_weights(weights):
    """TF HWIO -> Caffe (out, in/group, kh, kw)."""
    return weights.transpose(3, 2, 0, 1)


def inner_product_weights(weights, in_shape, transpose=False):
    """Caffe InnerProduct weights -> a (in, out) matrix for the NHWC-flattened input.

    Args:
        weights: (out, in) blob, or (in, out) when the layer has `transpose: true`.
        in_shape: the layer's input shape without the batch axis, Caffe order
            (C, H, W) or (C,). Caffe flattens C-H-W; TensorFlow flattens
            H-W-C, so the rows are permuted accordingly.
    """
    matrix = weights.T if transpose else weights  # (out, in)
    out = matrix.shape[0]
    if len(in_shape) == 3:
        c, h, w = in_shape
        matrix = matrix.reshape(out, c, h, w).transpose(0, 2, 3, 1).reshape(out, -1)
    return np.ascontiguousarray(matrix.T)


def caffe_inner_product_weights(matrix, in_shape, transpose=False):
    """(in, out) matrix for the NHWC-flattened input -> the Caffe blob (inverse of the above)."""
    weights = matrix.T
    if len(in_shape) == 3:
        c, h, w = in_shape
        weights = weights.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(weights.shape[0], -1)
    return weights.T if transpose else weights


# -- whole nets ------------------------------------------------------------------------------


def make_params(steps, blobs, fold_eps=None):
    """{parameter name: TF-layout float32 array} (names as in `param_shapes`).

    Args:
        steps: `fusion.fuse(graph)`.
        blobs: `layer_blobs(...)`.
        fold_eps: if set, each BatchNorm's variance becomes var + eps - fold_eps,
            so a model that always uses `fold_eps` computes the same function
            (the DeepLab model runs with 1e-5).
    """
    params = {}
    for step in steps:
        layer = step.layer
        name = layer.name
        if layer.type == "Convolution":
            b = blobs[name]
            params[param_name(name, "weights")] = conv_weights(b[0])
            if layer.attrs["bias"]:
                params[param_name(name, "biases")] = b[1]
        elif layer.type == "InnerProduct":
            b = blobs[name]
            params[param_name(name, "weights")] = inner_product_weights(
                b[0], layer.attrs["in_shape"], layer.attrs["transpose"])
            if layer.attrs["bias"]:
                params[param_name(name, "biases")] = b[1]
        elif layer.type == "Scale":
            b = blobs[name]
            params[param_name(name, "scale")] = b[0]
            params[param_name(name, "offset")] = (b[1] if layer.attrs["bias"]
                                                  else np.zeros_like(b[0]))
        bn = bn_layer(step)
        if bn is not None:
            mean, variance = bn_statistics(blobs[bn.name])
            if fold_eps is not None and bn.attrs["eps"] != fold_eps:
                variance = (variance.astype(np.float64) + bn.attrs["eps"]
                            - fold_eps).astype(np.float32)
            params[param_name(bn.name, "mean")] = mean
            params[param_name(bn.name, "variance")] = variance
            channels = bn.attrs["channels"]
            if step.scale is not None:
                s = blobs[step.scale.name]
                params[param_name(bn.name, "scale")] = s[0]
                params[param_name(bn.name, "offset")] = (s[1] if step.scale.attrs["bias"]
                                                         else np.zeros(channels, np.float32))
            else:
                params[param_name(bn.name, "scale")] = np.ones(channels, np.float32)
                params[param_name(bn.name, "offset")] = np.zeros(channels, np.float32)
    return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}


def params_to_blobs(steps, params, bn_factor=1.0):
    """The inverse of `make_params`: {layer name: [Caffe-layout float32 arrays]}.

    Args:
        steps: `fusion.fuse(graph)`.
        params: {name: TF-layout array} in the naming of `param_shapes`.
        bn_factor: the BatchNorm moving-average scale factor to store (Caffe
            keeps mean*f, var*f and [f]).
    """
    def get(layer, kind):
        name = param_name(layer, kind)
        if name not in params:
            raise KaffeError(f"weights for the caffemodel lack '{name}'")
        return np.asarray(params[name], np.float32)

    blobs = {}
    for step in steps:
        layer = step.layer
        name = layer.name
        if layer.type == "Convolution":
            blobs[name] = [caffe_conv_weights(get(name, "weights"))]
            if layer.attrs["bias"]:
                blobs[name].append(get(name, "biases"))
        elif layer.type == "InnerProduct":
            blobs[name] = [caffe_inner_product_weights(
                get(name, "weights"), layer.attrs["in_shape"], layer.attrs["transpose"])]
            if layer.attrs["bias"]:
                blobs[name].append(get(name, "biases"))
        elif layer.type == "Scale":
            blobs[name] = [get(name, "scale")]
            if layer.attrs["bias"]:
                blobs[name].append(get(name, "offset"))
        bn = bn_layer(step)
        if bn is not None:
            blobs[bn.name] = caffe_bn_statistics(get(bn.name, "mean"), get(bn.name, "variance"),
                                                 bn_factor)
            if step.scale is not None:
                blobs[step.scale.name] = [get(bn.name, "scale")]
                if step.scale.attrs["bias"]:
                    blobs[step.scale.name].append(get(bn.name, "offset"))
    return {name: [np.ascontiguousarray(b, dtype=np.float32) for b in arrays]
            for name, arrays in blobs.items()}
