"""Recognising a DeepLab-v2 ResNet among converted nets.

A net is a DeepLab net of variant V with N classes when its parameters (names
and TF shapes) are exactly those of `deeplab_resnet.model.architecture(V, N)`
and its convolutions and pool1 have the same geometry; then a checkpoint can
record (V, N) and load with no flags.
"""

from deeplab_resnet import model as dl_model
from deeplab_resnet.layers import CAFFE_BN_EPS

HEAD_LAYER = f"{dl_model.HEAD_PREFIX}_c0"


def expected_param_shapes(arch):
    """{name: TF shape} of the DeepLabResNet variables of an architecture."""
    shapes = {}
    for conv in arch.convs:
        shapes[f"{conv.name}/weights"] = (conv.kernel, conv.kernel, conv.in_channels, conv.out_channels)
        if conv.bias:
            shapes[f"{conv.name}/biases"] = (conv.out_channels,)
        if conv.bn:
            for key in ("mean", "variance", "scale", "offset"):
                shapes[f"{conv.bn}/{key}"] = (conv.out_channels,)
    return shapes


def match(graph, param_shapes):
    """(variant, num_classes) when `graph` is a DeepLab net, else None.

    Args:
        graph: the converted `Graph`.
        param_shapes: `kaffe.graph.param_shapes(steps)`.
    """
    head = param_shapes.get(f"{HEAD_LAYER}/weights")
    if head is None:
        return None
    num_classes = head[3]
    by_name = {layer.name: layer for layer in graph.layers}
    for variant in dl_model.VARIANTS:
        arch = dl_model.architecture(variant, num_classes)
        if expected_param_shapes(arch) != dict(param_shapes):
            continue
        if all(_same_conv(by_name.get(conv.name), conv) for conv in arch.convs) and \
                _same_pool(by_name.get("pool1"), arch.pool):
            return variant, num_classes
    return None


def _same_conv(layer, conv):
    if layer is None or layer.type != "Convolution":
        return False
    a = layer.attrs
    return (a["kernel"] == (conv.kernel,) * 2 and a["stride"] == (conv.stride,) * 2
            and a["pad"] == (conv.pad,) * 2 and a["dilation"] == (conv.dilation,) * 2
            and a["group"] == 1 and a["bias"] == conv.bias)


def _same_pool(layer, pool):
    if layer is None or layer.type != "Pooling":
        return False
    kernel, stride, pad = pool
    a = layer.attrs
    return (a["method"] == "MAX" and not a["global_pooling"] and a["ceil_mode"]
            and a["kernel"] == (kernel,) * 2 and a["stride"] == (stride,) * 2
            and a["pad"] == (pad,) * 2)


DEEPLAB_BN_EPS = CAFFE_BN_EPS
