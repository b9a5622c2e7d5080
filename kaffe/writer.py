"""The converter run backwards: Caffe-layout blobs -> a binary caffemodel.

Used to hand a network to Caffe-compatible tools (OpenCV DNN, Caffe itself),
by the demo's round trip and the benchmarks, and by tests that need
caffemodels with known weights. `transforms.params_to_blobs` gives the blobs
of TF-layout weights.
"""

from kaffe import caffe_pb


def caffemodel_bytes(net, blobs, v1=False, legacy_shapes=False):
    """Serialises blobs as a binary caffemodel.

    Args:
        net: the `kaffe.convert.Net` the blobs belong to.
        blobs: {layer name: [Caffe-layout arrays]}.
        v1: write the old V1 `layers` format instead of `layer`.
        legacy_shapes: describe blob shapes with num/channels/height/width.
    """
    proto_net = caffe_pb.NetParameter(name=net.graph.name)
    for layer in net.graph.layers:
        if v1:
            proto = proto_net.layers.add(name=layer.name)
            enum = caffe_pb.V1LayerParameter.DESCRIPTOR.enum_types_by_name["LayerType"]
            names = {v: k for k, v in caffe_pb.V1_TYPE_NAMES.items()}
            if layer.type in names:
                proto.type = enum.values_by_name[names[layer.type]].number
        else:
            proto = proto_net.layer.add(name=layer.name, type=layer.type)
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
    return proto_net.SerializeToString()
