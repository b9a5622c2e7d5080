"""The converter's entry points: prototxt (+ caffemodel) -> checkpoint, .npz, code."""

import dataclasses
import os

import numpy as np

from deeplab_resnet.utils import atomic_path
from kaffe import deeplab, emit, graph as graph_mod, reader, transforms
from kaffe.errors import KaffeError


@dataclasses.dataclass
class Converted:
    """A net read from a prototxt.

    Attributes:
        graph, steps: the shape-checked graph and its fused steps.
        deeplab: (variant, num_classes) when the net is a DeepLab net, else None.
    """
    graph: object
    steps: list
    deeplab: tuple

    @property
    def folded_eps(self):
        """The eps BatchNorm variances are folded to in weights files (DeepLab nets only)."""
        return deeplab.DEEPLAB_BN_EPS if self.deeplab else None

    def param_shapes(self):
        return graph_mod.param_shapes(self.steps)


def load_net(def_path=None, text=None, source=None):
    """Parses and checks a prototxt given as a file or as text.

    Args:
        def_path: prototxt file.
        text: prototxt text (instead of a file); `source` names it in messages.
    """
    if text is None:
        net = reader.read_prototxt(def_path)
        source = str(def_path)
    else:
        net = reader.parse_prototxt_text(text, source or "<prototxt>")
        source = source or "<prototxt>"
    g = graph_mod.build_graph(net, source)
    steps = graph_mod.fuse(g)
    return Converted(graph=g, steps=steps, deeplab=deeplab.match(g, graph_mod.param_shapes(steps)))


_AUTO = object()


def read_weights(converted, model_path, model=None, fold_eps=_AUTO):
    """{name: TF-layout array} for a net from its caffemodel.

    Args:
        converted: `load_net(...)`.
        model_path: the caffemodel (read unless `model`, its parsed form, is given).
        fold_eps: epsilon to fold BatchNorm variances to (None: keep them);
            default: 1e-5 for DeepLab nets, None otherwise.
    """
    if fold_eps is _AUTO:
        fold_eps = converted.folded_eps
    if model is None:
        model = reader.read_caffemodel(model_path)
    blobs = transforms.layer_blobs(converted.graph, model, str(model_path))
    return transforms.make_params(converted.steps, blobs, fold_eps=fold_eps)


def save_npz(params, path):
    """Writes {name: array} as a plain .npz (no pickle), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **params)


def save_code(code, path):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(code)


def _make_parent(path, flag):
    folder = os.path.dirname(os.path.abspath(str(path)))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise KaffeError(f"{flag} {path}: cannot create folder {folder} ({exc.strerror})") from None


def convert(def_path, caffemodel=None, ckpt_path=None, data_output_path=None,
            code_output_path=None):
    """Converts a Caffe net; what convert.py runs.

    Args:
        def_path: deploy prototxt.
        caffemodel: weights; required for `ckpt_path` and `data_output_path`.
        ckpt_path: checkpoint prefix to write (deeplab_resnet.checkpoint format;
            DeepLab nets also record variant and class count).
        data_output_path: `.npz` file to write (same names and values).
        code_output_path: `.py` file to write (TF2 code of the net).
    Returns:
        the `Converted` net.
    All files are written only after everything was read and checked, each
    atomically, so a failure leaves no partial output.
    """
    if not (ckpt_path or data_output_path or code_output_path):
        raise KaffeError("nothing to do: give --ckpt-path, --data-output-path or --code-output-path")
    if (ckpt_path or data_output_path) and not caffemodel:
        raise KaffeError("--ckpt-path and --data-output-path need --caffemodel")
    converted = load_net(def_path)
    params = read_weights(converted, caffemodel) if caffemodel else None
    code = emit.emit_code(converted.graph, converted.steps, converted.folded_eps) \
        if code_output_path else None
    # Everything is read and checked: only now create folders and write.
    for path, flag in ((ckpt_path, "--ckpt-path"), (data_output_path, "--data-output-path"),
                       (code_output_path, "--code-output-path")):
        if path:
            _make_parent(path, flag)
    if ckpt_path:
        from deeplab_resnet.checkpoint import save_params  # imports TensorFlow: only when needed
        variant, num_classes = converted.deeplab or (None, None)
        save_params(params, ckpt_path, variant, num_classes)
    if data_output_path:
        save_npz(params, data_output_path)
    if code_output_path:
        save_code(code, code_output_path)
    return converted
