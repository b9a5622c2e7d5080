"""DeepLab's side of Caffe: the deploy prototxt, recognising DeepLab nets, caffemodel weights.

The converter's (`kaffe`, pure Caffe I/O) one client: every other module of the package
reaches Caffe files through this one (`model.layers` borrows only `kaffe.sizes`, Caffe's
output-size formulas). Here the converter meets the network description (`arch`):

* `deploy_prototxt` writes an architecture as a Caffe deploy prototxt, as the
  released `deploy.prototxt` has it: old-style `input:`/`input_dim:`, per
  convolution the Convolution, BatchNorm (use_global_stats), Scale (bias_term)
  and in-place ReLU layers, `pool1`, each block's Eltwise (shortcut first)
  and its `_relu`, and the ASPP head summed by the Eltwise `fc1_voc12`.
* `load_net` reads a prototxt and recognises a DeepLab net: one whose
  parameters (names and TF shapes) are exactly those of
  `arch.architecture(V, N)` and whose convolutions and pool1 have the same
  geometry; a checkpoint can then record (V, N) and load with no flags.
* `open_caffemodel` opens a caffemodel as a `weights.WeightsFile` in the model's
  naming scheme (so a caffemodel is accepted anywhere a checkpoint is), through the
  factory `weights.opened`: its blobs matched to `arch` directly, or converted for a
  given prototxt or net; `caffemodel_weights` reads them all; `caffemodel_bytes` and
  `write_caffemodel` the reverse.

The converter's errors (`kaffe.KaffeError`) leave this module as `BadFileError`
(or a `SettingError` suggesting the prototxt, for a caffemodel that is not DeepLab's).
"""

import contextlib
import dataclasses
import functools

import numpy as np

from deeplab_resnet.model import arch as arch_lib
from deeplab_resnet import defaults
from deeplab_resnet.weights import weights_file as weights
from deeplab_resnet import files
from deeplab_resnet.errors import BadFileError, SettingError, shown
from deeplab_resnet.files import atomic_path
from kaffe import convert as kaffe_convert
from kaffe import emit, reader, transforms, writer
from kaffe.errors import KaffeError

HEAD_LAYER = weights.HEAD_LAYER


@contextlib.contextmanager
def _bad_file(path, kind=None, text=False):
    """Re-raises the converter's errors as the project's one-line `BadFileError` for `path`
    (shown escaped and cut: `errors.shown`); with `kind` ("a caffemodel", ...), a file
    that is plainly something else (an HTML page, ...) is called that (`files.not_a`)."""
    try:
        yield
    except KaffeError as exc:
        disguised = kind is not None and path is not None and files.not_a(path, kind, text)
        raise BadFileError(disguised or shown(str(exc), limit=400), path=path) from None


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


def load_net(def_path=None, text=None, source=None):
    """Parses and checks a prototxt given as a file or as text; recognises DeepLab nets.

    Args:
        def_path: prototxt file.
        text: prototxt text (instead of a file); `source` names it in messages.
    """
    with _bad_file(def_path if text is None else source, "a prototxt" if text is None else None,
                   text=True):
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


def open_caffemodel(path, variant=None, prototxt=None, net=None):
    """Opens a caffemodel as a `weights.WeightsFile`, through its factory `weights.opened`.

    Without `prototxt` (or `net`) the blobs are matched to `arch.architecture` directly (no
    prototxt is generated or parsed): layers by name, blob counts and Caffe shapes from the
    blobs' headers, values converted only when read. With `prototxt` the net is converted by
    `kaffe` (any Caffe net, e.g. an ImageNet ResNet's deploy prototxt).

    Args:
        path: the `.caffemodel`.
        variant: DeepLab variant to match the blobs to when `prototxt` is None; None:
            the one whose layers the caffemodel has.
        prototxt: deploy prototxt of the caffemodel, for a model to be built from it:
            every BatchNorm eps is folded to the model's (`defaults.BN_EPS`).
        net: instead of `prototxt`, a `load_net` result, for conversion: the variances
            are folded as `CaffeNet.folded_eps` says (DeepLab nets only).
    Returns:
        the WeightsFile: variant and class count inferred (the class count from
        `fc1_voc12_c0`'s blob, None without it); BatchNorm variances hold
        var + eps - 1e-5 (the model's eps; the prototxt's eps, else Caffe's 1e-5).
    Raises:
        BadFileError: unreadable file, or a caffemodel that does not fit the prototxt.
        SettingError (suggesting `prototxt`, when the tensors are first needed): a
            caffemodel whose layers do not fit DeepLab's (e.g. an ImageNet ResNet's).
    """
    with _bad_file(path, "a caffemodel"):
        parsed = reader.read_caffemodel(path)
    if prototxt is not None or net is not None:
        # Weights that go into a DeepLabResNet, which runs BatchNorm with eps 1e-5, get any
        # other eps folded into their variances, whatever net the prototxt is.
        fold_eps = defaults.BN_EPS if net is None else net.folded_eps
        net = net or load_net(prototxt)
        with _bad_file(path):
            params = kaffe_convert.read_weights(net, path, parsed=parsed, fold_eps=fold_eps)
        tensors = {name: (value.shape, functools.partial(np.asarray, value))
                   for name, value in params.items()}
        return weights.opened(str(path), "caffemodel", tensors, strict=False)
    layers = transforms.caffemodel_layers(parsed)
    variant = variant or arch_lib.infer_variant(layers) or defaults.VARIANT
    num_classes = _head_classes(layers, path)
    return weights.opened(str(path), "caffemodel", implied=(variant, num_classes), strict=False,
                          index=functools.partial(_match, str(path), layers, variant,
                                                  num_classes))


def _head_classes(layers, path):
    """Output channels of `fc1_voc12_c0` from its blob's header; None without it."""
    _, blobs = layers.get(weights.HEAD_LAYER, (None, ()))
    if not blobs:
        return None
    shape, _ = transforms.blob_shape(blobs[0])
    if len(shape) != 4 or not 1 <= shape[0] <= weights.MAX_CLASSES:
        raise BadFileError(f"{path}: layer '{weights.HEAD_LAYER}' blob 0 has shape {shape}, "
                           "not a DeepLab head's", path=path)
    return int(shape[0])


def _match(path, layers, variant, num_classes):
    """{name: (TF shape, read)} of a caffemodel's blobs for DeepLab `variant`.

    Every convolution of the architecture (the head only when `num_classes`) must be
    there with its BatchNorm and Scale; the shapes are checked from the blobs' headers.
    Other layers (another net's head, loss layers) are ignored.
    """
    network = arch_lib.architecture(variant, num_classes or 1)
    convs = [c for c in network.convs
             if num_classes is not None or not arch_lib.is_head_variable(c.name)]
    source = f"DeepLab {variant}"
    try:
        tensors = {}
        for conv in convs:
            tensors.update(_conv_tensors(path, layers, conv, source))
        return tensors
    except KaffeError as exc:
        # E.g. an ImageNet ResNet (conv1 has a bias there): DeepLab's layers do not fit it.
        raise SettingError(f"{exc}; if this is not a DeepLab caffemodel (e.g. an ImageNet "
                           "ResNet), give its own deploy prototxt with {prototxt}",
                           "prototxt", path=path) from None


def _layer_blobs(path, layers, name, type_, shapes, source):
    """A reader of layer `name`'s blobs as Caffe-layout arrays, its shapes checked now."""
    if name not in layers:
        raise KaffeError(f"{path}: caffemodel has no layer '{name}' ({source} has it)")
    stored_type, blobs = layers[name]
    if stored_type and stored_type != type_:
        raise KaffeError(f"{path}: layer '{name}' is a {stored_type} in the caffemodel but a "
                         f"{type_} in {source}")
    what = f"{path}: layer '{name}'"
    transforms.check_blob_shapes(blobs, shapes, what, source)

    @functools.cache
    def arrays():
        with _bad_file(path):
            return transforms.checked_blobs(blobs, shapes, what, source)
    return arrays


def _conv_tensors(path, layers, conv, source):
    """{name: (TF shape, read)} of one convolution with its BatchNorm and Scale."""
    out, channels = conv.out_channels, (conv.out_channels,)
    shapes = [(out, conv.in_channels, conv.kernel, conv.kernel)] + ([channels] * conv.bias)
    blobs = _layer_blobs(path, layers, conv.name, "Convolution", shapes, source)
    tensors = {conv.weights: (conv.param_shapes()[conv.weights],
                              lambda: transforms.conv_weights(blobs()[0]))}
    if conv.bias:
        tensors[conv.biases] = (channels, lambda: blobs()[1])
    if conv.bn:
        stats = _layer_blobs(path, layers, conv.bn, "BatchNorm", [channels, channels, (1,)],
                             source)
        scale = _layer_blobs(path, layers, conv.scale, "Scale", [channels, channels], source)
        tensors.update({
            conv.bn_param("mean"): (channels, lambda: transforms.bn_statistics(stats())[0]),
            conv.bn_param("variance"): (channels, lambda: transforms.bn_statistics(stats())[1]),
            conv.bn_param("scale"): (channels, lambda: scale()[0]),
            conv.bn_param("offset"): (channels, lambda: scale()[1])})
    return tensors


def caffemodel_weights(path, variant, prototxt=None, new_head=False):
    """Converts a caffemodel to {parameter name: array} in the model's naming scheme.

    Args:
        path: the `.caffemodel`.
        variant: DeepLab variant to match the blobs to (without `prototxt`); None:
            the one whose layers the caffemodel has.
        prototxt: deploy prototxt of the caffemodel (see `open_caffemodel`).
        new_head: the head will not be restored: a caffemodel without
            DeepLab's VOC head (e.g. a COCO-trained one with other head
            layers) is read for its backbone only.
    Returns:
        (params, num_classes); num_classes is None for a net without the DeepLab
        head (e.g. an ImageNet ResNet given with its own prototxt).
    Raises:
        DeepLabError: unreadable file, or a caffemodel that does not fit.
    """
    found = open_caffemodel(path, variant, prototxt)
    if prototxt is None:
        found.require_head(new_head)
    return found.read_all(), found.num_classes


def emit_code(net):
    """TF2 source of `net` (see `kaffe.emit`)."""
    with _bad_file(net.graph.source):
        return emit.emit_code(net.graph, net.steps, net.folded_eps)


def caffemodel_bytes(net, params, bn_factor=1.0):
    """TF-layout weights {name: array} of `net` as a binary caffemodel.

    Args:
        net: a `load_net` result.
        params: {name: TF-layout array}.
        bn_factor: the BatchNorm moving-average scale factor to store (Caffe
            keeps mean*f, var*f and [f]).
    """
    with _bad_file(net.graph.source):
        blobs = transforms.params_to_blobs(net.steps, params, bn_factor)
        return writer.caffemodel_bytes(net, blobs)


def write_caffemodel(prototxt, params, path, bn_factor=1.0, text=None):
    """Writes TF-layout weights as a caffemodel for a prototxt (file, or `text`), atomically."""
    data = caffemodel_bytes(load_net(prototxt, text=text), params, bn_factor)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


