"""DeepLab's side of Caffe: the deploy prototxt, recognising DeepLab nets, caffemodel weights.

The only module of the package that imports the converter (`kaffe`, pure Caffe
I/O). Here the converter meets the network description (`arch`):

* `deploy_prototxt` writes an architecture as a Caffe deploy prototxt, as the
  released `deploy.prototxt` has it: old-style `input:`/`input_dim:`, per
  convolution the Convolution, BatchNorm (use_global_stats), Scale (bias_term)
  and in-place ReLU layers, `pool1`, each block's Eltwise (shortcut first)
  and its `_relu`, and the ASPP head summed by the Eltwise `fc1_voc12`.
* `load_net` reads a prototxt and recognises a DeepLab net: one whose
  parameters (names and TF shapes) are exactly those of
  `arch.architecture(V, N)` and whose convolutions and pool1 have the same
  geometry; a checkpoint can then record (V, N) and load with no flags.
* `caffemodel_weights` gives a caffemodel's weights in the model's naming scheme
  (so a caffemodel is accepted anywhere a checkpoint is), `caffemodel_bytes`
  and `write_caffemodel` the reverse.

The converter's errors (`kaffe.KaffeError`) leave this module as `DeepLabError`.
"""

import dataclasses
import functools

from deeplab_resnet import arch as arch_lib
from deeplab_resnet import defaults
from deeplab_resnet.errors import SettingError, DeepLabError
from deeplab_resnet.utils import atomic_path
from kaffe import convert as kaffe_convert
from kaffe import emit, reader, transforms, writer
from kaffe.errors import KaffeError

HEAD_LAYER = f"{arch_lib.HEAD_PREFIX}_c0"


def _user_errors(function):
    """Re-raises the converter's errors as the project's one-line `DeepLabError`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except KaffeError as exc:
            raise DeepLabError(str(exc)) from None
    return wrapper


# -- the deploy prototxt -----------------------------------------------------------------------


def _layer(name, type_, bottoms, tops, body=()):
    lines = ["layer {", f'  name: "{name}"', f'  type: "{type_}"']
    lines += [f'  bottom: "{b}"' for b in bottoms]
    lines += [f'  top: "{t}"' for t in tops]
    lines += ["  " + line for line in body]
    lines.append("}")
    return "\n".join(lines)


def _conv_layers(conv, bottom):
    body = ["convolution_param {", f"  num_output: {conv.out_channels}",
            f"  kernel_size: {conv.kernel}", f"  pad: {conv.pad}", f"  stride: {conv.stride}"]
    if conv.dilation != 1:
        body.append(f"  dilation: {conv.dilation}")
    body += [f"  bias_term: {'true' if conv.bias else 'false'}", "}"]
    out = [_layer(conv.name, "Convolution", [bottom], [conv.name], body)]
    if conv.bn:
        out.append(_layer(conv.bn, "BatchNorm", [conv.name], [conv.name],
                          ["batch_norm_param {", "  use_global_stats: true", "}"]))
        out.append(_layer(conv.scale, "Scale", [conv.name], [conv.name],
                          ["scale_param {", "  bias_term: true", "}"]))
    if conv.relu:
        out.append(_layer(f"{conv.name}_relu", "ReLU", [conv.name], [conv.name]))
    return out


def deploy_prototxt(variant=defaults.VARIANT, num_classes=defaults.NUM_CLASSES,
                    input_size=defaults.INPUT_SIZE, head=True):
    """The deploy prototxt text of `arch.architecture(variant, num_classes)`.

    Args:
        variant: a key of `arch.VARIANTS`.
        num_classes: output channels of the head.
        input_size: height and width written in `input_dim` (Caffe reshapes to any size).
        head: include the ASPP head; without it the net ends at `res5c` (the
            backbone, for reading caffemodels whose head is not DeepLab's VOC one).
    """
    layers = []

    def conv(bottom, layer):
        layers.extend(_conv_layers(layer, bottom))
        return layer.name

    def pool(bottom, layer):
        layers.append(_layer(layer.name, "Pooling", [bottom], [layer.name], [
            "pooling_param {", "  pool: MAX", f"  kernel_size: {layer.kernel}",
            f"  stride: {layer.stride}", f"  pad: {layer.pad}", "}"]))
        return layer.name

    def join(block, shortcut, branch):
        layers.append(_layer(block.name, "Eltwise", [shortcut, branch], [block.name],
                             ["eltwise_param {", "  operation: SUM", "}"]))
        layers.append(_layer(f"{block.name}_relu", "ReLU", [block.name], [block.name]))
        return block.name

    def join_head(branches):
        layers.append(_layer(arch_lib.HEAD_PREFIX, "Eltwise", branches, [arch_lib.HEAD_PREFIX],
                             ["eltwise_param {", "  operation: SUM", "}"]))
        return arch_lib.HEAD_PREFIX

    arch_lib.run(arch_lib.architecture(variant, num_classes), "data", conv, pool, join,
                 join_head if head else None)
    header = (f'name: "DeepLab-v2 {variant}"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\n'
              f"input_dim: {input_size}\ninput_dim: {input_size}")
    return header + "\n\n" + "\n\n".join(layers) + "\n"


# -- recognising DeepLab nets ------------------------------------------------------------------


@dataclasses.dataclass
class CaffeNet(kaffe_convert.Net):
    """A converted net and, when it is a DeepLab net, what it is.

    Attributes:
        deeplab: (variant, num_classes) when the net is a DeepLab net, else None.
    """
    deeplab: tuple = None

    @property
    def folded_eps(self):
        """The eps BatchNorm variances are folded to in weights files (DeepLab nets only)."""
        return defaults.BN_EPS if self.deeplab else None


@_user_errors
def load_net(def_path=None, text=None, source=None):
    """Parses and checks a prototxt given as a file or as text; recognises DeepLab nets.

    Args:
        def_path: prototxt file.
        text: prototxt text (instead of a file); `source` names it in messages.
    """
    net = kaffe_convert.load_net(def_path, text, source)
    return CaffeNet(net.graph, net.steps, deeplab=match(net.graph, net.param_shapes()))


def match(graph, param_shapes):
    """(variant, num_classes) when `graph` is a DeepLab net, else None.

    Args:
        graph: the converted `kaffe.graph.Graph`.
        param_shapes: its parameters, {name: TF shape}.
    """
    head = param_shapes.get(arch_lib.param_name(HEAD_LAYER, arch_lib.WEIGHTS))
    if head is None:
        return None
    num_classes = head[3]
    by_name = {layer.name: layer for layer in graph.layers}
    for variant in arch_lib.VARIANTS:
        arch = arch_lib.architecture(variant, num_classes)
        if arch.param_shapes() != dict(param_shapes):
            continue
        if all(_same_conv(by_name.get(conv.name), conv) for conv in arch.convs) and \
                _same_pool(by_name.get(arch.pool.name), arch.pool):
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
    a = layer.attrs
    return (a["method"] == "MAX" and not a["global_pooling"] and a["ceil_mode"]
            and a["kernel"] == (pool.kernel,) * 2 and a["stride"] == (pool.stride,) * 2
            and a["pad"] == (pool.pad,) * 2)


# -- weights -----------------------------------------------------------------------------------


@_user_errors
def read_weights(net, caffemodel):
    """{name: TF-layout array} of a caffemodel for `net` (a `load_net` result).

    DeepLab nets get their BatchNorm variances folded to the model's eps
    (`CaffeNet.folded_eps`); other nets keep them.
    """
    return kaffe_convert.read_weights(net, caffemodel, fold_eps=net.folded_eps)


def caffemodel_weights(path, variant, prototxt=None, new_head=False):
    """Converts a caffemodel to {parameter name: array} in the model's naming scheme.

    Args:
        path: the `.caffemodel`.
        variant: DeepLab variant the weights are for (picks the generated
            deploy prototxt when `prototxt` is None); None: the one whose
            layers the caffemodel has.
        prototxt: deploy prototxt of the caffemodel; default: the one
            `deploy_prototxt` generates for `variant`, with the class count
            read from the caffemodel's `fc1_voc12_c0` weights.
        new_head: the head will not be restored: a caffemodel without
            DeepLab's VOC head (e.g. a COCO-trained one with other head
            layers) is read for its backbone only.
    Returns:
        (params, num_classes); BatchNorm variances hold var + eps - 1e-5 (the
        model's eps is 1e-5); num_classes is None for a net without the
        DeepLab head (e.g. an ImageNet ResNet given with its own prototxt).
    Raises:
        DeepLabError: unreadable file, or a caffemodel that does not fit the prototxt.
    """
    parsed = _user_errors(reader.read_caffemodel)(path)
    if prototxt is None:
        variant = (variant or arch_lib.infer_variant(p.name for p in _layers(parsed))
                   or defaults.VARIANT)
        num_classes = _head_classes(parsed, path, required=not new_head)
        text = deploy_prototxt(variant, num_classes or 1, head=num_classes is not None)
        net = load_net(text=text, source=f"<generated {variant} deploy prototxt>")
    else:
        net = load_net(prototxt)
    # The weights go into a DeepLabResNet, which runs BatchNorm with eps 1e-5:
    # fold any other eps into the variances, whatever net the prototxt is.
    try:
        params = kaffe_convert.read_weights(net, path, parsed=parsed, fold_eps=defaults.BN_EPS)
    except KaffeError as exc:
        if prototxt is not None:
            raise DeepLabError(str(exc)) from None
        # E.g. an ImageNet ResNet (conv1 has a bias there): DeepLab's prototxt does not fit it.
        raise SettingError(f"{exc}; if this is not a DeepLab caffemodel (e.g. an ImageNet "
                           "ResNet), give its own deploy prototxt with {prototxt}",
                           "prototxt") from None
    if net.deeplab is not None:
        return params, net.deeplab[1]
    head = params.get(arch_lib.param_name(HEAD_LAYER, arch_lib.WEIGHTS))
    return params, (int(head.shape[3]) if head is not None else None)


def _layers(parsed):
    """The layers of a parsed caffemodel, new (`layer`) and V1 (`layers`) ones."""
    return list(parsed.layer) + list(parsed.layers)


def _head_classes(parsed, path, required=True):
    """Output channels of the caffemodel's `fc1_voc12_c0`; None if absent and not `required`."""
    for proto in _layers(parsed):
        if proto.name == HEAD_LAYER and len(proto.blobs):
            what = f"{path}: layer '{proto.name}' blob 0"
            weights, _ = _user_errors(transforms.blob_array)(proto.blobs[0], what)
            return int(weights.shape[0])
    if not required:
        return None
    raise SettingError(f"{path}: caffemodel has no '{HEAD_LAYER}' layer, so it is not a "
                       "DeepLab model; give its deploy prototxt with {prototxt}, or add "
                       "{new_head} to read its backbone only", "prototxt", "new_head")


@_user_errors
def emit_code(net):
    """TF2 source of `net` (see `kaffe.emit`)."""
    return emit.emit_code(net.graph, net.steps, net.folded_eps)


@_user_errors
def caffemodel_bytes(net, params, bn_factor=1.0):
    """TF-layout weights {name: array} of `net` as a binary caffemodel.

    Args:
        net: a `load_net` result.
        params: {name: TF-layout array}.
        bn_factor: the BatchNorm moving-average scale factor to store (Caffe
            keeps mean*f, var*f and [f]).
    """
    return writer.caffemodel_bytes(net, transforms.params_to_blobs(net.steps, params, bn_factor))


def write_caffemodel(prototxt, params, path, bn_factor=1.0, text=None):
    """Writes TF-layout weights as a caffemodel for a prototxt (file, or `text`), atomically."""
    data = caffemodel_bytes(load_net(prototxt, text=text), params, bn_factor)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


