"""Caffe blobs -> TensorFlow parameters.

`layer_blobs` pulls each layer's blobs out of a caffemodel, matching layers by
name and checking the blob count and shapes against what the prototxt implies
(a caffemodel written for another net fails here, naming the layer).
`make_params` then applies the transforms: BatchNorm's scale-factor division,
BatchNorm + Scale fusion, and the layout changes (convolution OIHW -> HWIO;
InnerProduct rows from the C-H-W order of Caffe's flattened input to the
H-W-C order of TensorFlow's NHWC flatten).
"""

import math

import numpy as np

from kaffe import caffe_pb
from kaffe.errors import KaffeError
from kaffe.graph import bn_layer


def blob_array(blob, what):
    """A BlobProto as a float32 array of its declared shape.

    Args:
        blob: a `caffe.BlobProto`.
        what: description for error messages ("file: layer 'x' blob 0").
    Returns:
        (array, legacy) where legacy tells the shape came from num/channels/height/width.
    """
    if blob.HasField("shape"):
        shape, legacy = tuple(int(d) for d in blob.shape.dim), False
    else:
        shape, legacy = (int(blob.num), int(blob.channels), int(blob.height), int(blob.width)), True
    if len(blob.double_data):
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        values = np.asarray(blob.data, dtype=np.float32)
    count = math.prod(shape)
    if values.size != count:
        raise KaffeError(f"{what} holds {values.size} values but its shape {shape} needs {count} "
                         "(truncated or corrupt caffemodel?)")
    return values.reshape(shape), legacy


def _model_layers(model):
    """{name: (type, [BlobProto])} of a parsed caffemodel (current or V1 format)."""
    out = {}
    for proto in model.layer:
        out[proto.name] = (proto.type, list(proto.blobs))
    for proto in model.layers:
        out[proto.name] = (caffe_pb.v1_type_name(proto.type), list(proto.blobs))
    return out


def layer_blobs(graph, model, model_path):
    """{layer name: [Caffe-layout arrays]} for every layer of `graph` that has weights.

    Args:
        graph: the prototxt's `Graph`.
        model: the parsed caffemodel (`NetParameter`).
        model_path: its file name, for messages.
    Raises:
        KaffeError: a layer missing from the caffemodel, of another type, or
            with blobs whose number or shapes differ from the prototxt's.
    """
    found = _model_layers(model)
    wanted = [layer for layer in graph.layers if layer.blob_shapes]
    if wanted and not any(layer.name in found for layer in wanted):
        raise KaffeError(f"{model_path}: caffemodel has none of the layers of {graph.source} "
                         f"(e.g. '{wanted[0].name}'): it was written for a different net")
    out = {}
    for layer in wanted:
        if layer.name not in found:
            raise KaffeError(f"{model_path}: caffemodel has no layer '{layer.name}' "
                             f"(written for a different prototxt than {graph.source}?)")
        model_type, blobs = found[layer.name]
        if model_type and model_type != layer.type:
            raise KaffeError(f"{model_path}: layer '{layer.name}' is a {model_type} in the "
                             f"caffemodel but a {layer.type} in {graph.source}")
        if len(blobs) != len(layer.blob_shapes):
            raise KaffeError(f"{model_path}: layer '{layer.name}' has {len(blobs)} blobs, "
                             f"{graph.source} expects {len(layer.blob_shapes)}")
        arrays = []
        for i, (blob, expected) in enumerate(zip(blobs, layer.blob_shapes)):
            array, legacy = blob_array(blob, f"{model_path}: layer '{layer.name}' blob {i}")
            # Legacy 4-D shapes pad the real shape with leading 1s (Caffe compares them so).
            want = (1,) * (4 - len(expected)) + tuple(expected) if legacy else tuple(expected)
            if array.shape != want:
                raise KaffeError(f"{model_path}: layer '{layer.name}' blob {i} has shape "
                                 f"{array.shape}, {graph.source} implies {tuple(expected)}")
            arrays.append(array.reshape(expected))
        out[layer.name] = arrays
    return out


def bn_statistics(blobs):
    """Caffe BatchNorm blobs (mean*f, var*f, [f]) -> (mean, variance); f == 0 gives 0."""
    factor = float(blobs[2].reshape(-1)[0])
    inv = 0.0 if factor == 0 else 1.0 / factor
    return (blobs[0] * np.float32(inv)).astype(np.float32), (blobs[1] * np.float32(inv)).astype(np.float32)


def conv_weights(weights):
    """Caffe (out, in/group, kh, kw) -> TF HWIO (kh, kw, in/group, out)."""
    return np.ascontiguousarray(weights.transpose(2, 3, 1, 0))


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


def make_params(steps, blobs, fold_eps=None):
    """{parameter name: TF-layout float32 array} (names as in `graph.param_shapes`).

    Args:
        steps: `graph.fuse(graph)`.
        blobs: `layer_blobs(...)`.
        fold_eps: if set, each BatchNorm's variance becomes var + eps - fold_eps,
            so a model that always uses `fold_eps` computes the same function
            (the DeepLab model runs with 1e-5).
    """
    params = {}
    for step in steps:
        layer = step.layer
        if layer.type == "Convolution":
            b = blobs[layer.name]
            params[f"{layer.name}/weights"] = conv_weights(b[0])
            if layer.attrs["bias"]:
                params[f"{layer.name}/biases"] = b[1]
        elif layer.type == "InnerProduct":
            b = blobs[layer.name]
            params[f"{layer.name}/weights"] = inner_product_weights(
                b[0], layer.attrs["in_shape"], layer.attrs["transpose"])
            if layer.attrs["bias"]:
                params[f"{layer.name}/biases"] = b[1]
        elif layer.type == "Scale":
            b = blobs[layer.name]
            params[f"{layer.name}/scale"] = b[0]
            params[f"{layer.name}/offset"] = b[1] if layer.attrs["bias"] else np.zeros_like(b[0])
        bn = bn_layer(step)
        if bn is not None:
            mean, variance = bn_statistics(blobs[bn.name])
            if fold_eps is not None and bn.attrs["eps"] != fold_eps:
                variance = (variance.astype(np.float64) + bn.attrs["eps"] - fold_eps).astype(np.float32)
            params[f"{bn.name}/mean"] = mean
            params[f"{bn.name}/variance"] = variance
            channels = bn.attrs["channels"]
            if step.scale is not None:
                s = blobs[step.scale.name]
                params[f"{bn.name}/scale"] = s[0]
                params[f"{bn.name}/offset"] = (s[1] if step.scale.attrs["bias"]
                                               else np.zeros(channels, np.float32))
            else:
                params[f"{bn.name}/scale"] = np.ones(channels, np.float32)
                params[f"{bn.name}/offset"] = np.zeros(channels, np.float32)
    return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
