"""The converter run backwards: TF-layout weights -> a binary caffemodel.

Used to hand a network to Caffe-compatible tools (OpenCV DNN, Caffe itself),
by the demo's round trip and the benchmarks, and by tests that need
caffemodels with known weights.
"""

import numpy as np

from kaffe import caffe_pb
from kaffe.convert import load_net
from kaffe.errors import KaffeError
from kaffe.graph import bn_layer
from deeplab_resnet.utils import atomic_path


def _caffe_inner_product(matrix, in_shape):
    """(in, out) matrix for the NHWC-flattened input -> Caffe's (out, in) in C-H-W order."""
    weights = matrix.T
    if len(in_shape) == 3:
        c, h, w = in_shape
        weights = weights.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(weights.shape[0], -1)
    return weights


def params_to_blobs(converted, params, bn_factor=1.0):
    """{layer name: [Caffe-layout float32 arrays]} for the weighted layers of a net.

    Args:
        converted: `kaffe.convert.load_net(...)`.
        params: {name: TF-layout array} in the naming of `graph.param_shapes`.
        bn_factor: the BatchNorm moving-average scale factor to store (Caffe
            keeps mean*f, var*f and [f]).
    """
    def get(name):
        if name not in params:
            raise KaffeError(f"weights for the caffemodel lack '{name}'")
        return np.asarray(params[name], np.float32)

    blobs = {}
    for step in converted.steps:
        layer = step.layer
        if layer.type == "Convolution":
            blobs[layer.name] = [get(f"{layer.name}/weights").transpose(3, 2, 0, 1)]
            if layer.attrs["bias"]:
                blobs[layer.name].append(get(f"{layer.name}/biases"))
        elif layer.type == "InnerProduct":
            weights = _caffe_inner_product(get(f"{layer.name}/weights"), layer.attrs["in_shape"])
            blobs[layer.name] = [weights.T if layer.attrs["transpose"] else weights]
            if layer.attrs["bias"]:
                blobs[layer.name].append(get(f"{layer.name}/biases"))
        elif layer.type == "Scale":
            blobs[layer.name] = [get(f"{layer.name}/scale")]
            if layer.attrs["bias"]:
                blobs[layer.name].append(get(f"{layer.name}/offset"))
        bn = bn_layer(step)
        if bn is not None:
            factor = np.float32(bn_factor)
            blobs[bn.name] = [get(f"{bn.name}/mean") * factor, get(f"{bn.name}/variance") * factor,
                              np.array([factor], np.float32)]
            if step.scale is not None:
                blobs[step.scale.name] = [get(f"{bn.name}/scale")]
                if step.scale.attrs["bias"]:
                    blobs[step.scale.name].append(get(f"{bn.name}/offset"))
    return {name: [np.ascontiguousarray(b, dtype=np.float32) for b in arrays]
            for name, arrays in blobs.items()}


def caffemodel_bytes(converted, blobs, v1=False, legacy_shapes=False):
    """Serialises blobs as a binary caffemodel.

    Args:
        converted: the net the blobs belong to.
        blobs: {layer name: [Caffe-layout arrays]}.
        v1: write the old V1 `layers` format instead of `layer`.
        legacy_shapes: describe blob shapes with num/channels/height/width.
    """
    net = caffe_pb.NetParameter(name=converted.graph.name)
    for layer in converted.graph.layers:
        if v1:
            proto = net.layers.add(name=layer.name)
            enum = caffe_pb.V1LayerParameter.DESCRIPTOR.enum_types_by_name["LayerType"]
            names = {v: k for k, v in caffe_pb.V1_TYPE_NAMES.items()}
            if layer.type in names:
                proto.type = enum.values_by_name[names[layer.type]].number
        else:
            proto = net.layer.add(name=layer.name, type=layer.type)
        proto.bottom.extend(layer.bottoms)
        proto.top.extend(layer.tops)
        for array in blobs.get(layer.name, []):
            blob = proto.blobs.add()
            if legacy_shapes:
                dims = (1,) * (4 - array.ndim) + array.shape
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(array.shape)
            blob.data.extend(array.reshape(-1).tolist())
    return net.SerializeToString()


def write_caffemodel(prototxt, params, path, bn_factor=1.0, text=None):
    """Writes TF-layout weights as a caffemodel for a prototxt (file, or `text`), atomically."""
    converted = load_net(prototxt, text=text)
    data = caffemodel_bytes(converted, params_to_blobs(converted, params, bn_factor))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path
