"""ONNX files: written from `portable.PortableGraph` with tf2onnx, run with onnxruntime.

The graph has one input, `image` uint8 [H, W, 3] (a fixed size, or any size when exported
without one), and the outputs `labels` int32 [H, W], `probabilities` float32 [H, W, C] and
`logits` float32 [h', w', C]. Every resize is stated with its coordinates: logits to image
is "asymmetric" (output p reads input p/8), MSC resizes "align_corners" (see `portable`),
so that onnxruntime computes what TensorFlow computes at every size. The class names and
colours are the model's metadata_props entry "deeplab_resnet" (JSON; `read_metadata`).
"""

import json

import numpy as np
import tensorflow as tf

from deeplab_resnet.errors import BadFileError, DeepLabError

METADATA_NAME = "deeplab_resnet"
OPSET = 17
INSTALL_HINT = ('running a .onnx file needs the optional onnxruntime: pip install -e ".[onnx]"')
EXPORT_HINT = ('--format onnx needs the optional tf2onnx and onnx: pip install -e ".[onnx]"')
OUTPUTS = ("labels", "probabilities", "logits")


def available():
    """Whether onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def check_exporter():
    """Raises DeepLabError naming the extra unless tf2onnx and onnx can be imported."""
    try:
        import onnx  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError:
        raise DeepLabError(EXPORT_HINT) from None


def convert(graph, input_size=None, metadata=None):
    """The serialized ONNX model (bytes) of a `portable.PortableGraph`, `metadata` (a dict)
    recorded as its metadata_props entry METADATA_NAME."""
    check_exporter()
    import tf2onnx
    shape = [None, None, 3] if input_size is None else [input_size[0], input_size[1], 3]
    spec = tf.TensorSpec(shape, tf.uint8, name="image")

    @tf.function(input_signature=[spec], autograph=False)
    def serve(image):
        outputs = graph(tf.cast(image, tf.float32)[tf.newaxis])
        return [tf.identity(outputs[name][0], name=name) for name in OUTPUTS]

    model, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=OPSET)
    for output, name in zip(list(model.graph.output), OUTPUTS):
        _rename(model.graph, output.name, name)
    model.graph.input[0].name = "image"
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_NAME, json.dumps(metadata or {})
    return model.SerializeToString()


def _rename(graph, old, new):
    """Renames the graph value `old` to `new` wherever it is produced or read."""
    for node in graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for output in graph.output:
        if output.name == old:
            output.name = new


def _session(path, threads):
    try:
        import onnxruntime
    except ImportError:
        raise DeepLabError(INSTALL_HINT) from None
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own, unexported, exception types
        raise BadFileError(f"{path}: onnxruntime cannot load it ({exc})".splitlines()[0],
                           path=path) from None


def read_metadata(path, session=None):
    """The METADATA_NAME dict of a .onnx file.

    Raises:
        BadFileError: not an ONNX file, or one without this project's metadata.
    """
    session = session or _session(path, 1)
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_NAME not in props:
        raise BadFileError(f"{path}: an ONNX file without deeplab_resnet's metadata (not "
                           "written by export.py --format onnx)", path=path)
    return json.loads(props[METADATA_NAME])


class Runner:
    """A .onnx file in onnxruntime: `run(image)` -> {"labels", "probabilities", "logits"}.

    Args:
        path: the .onnx file.
        threads: intra-op threads (default: onnxruntime's).
    Raises:
        DeepLabError naming the extra when onnxruntime is missing; BadFileError for a file
        it cannot load.
    """

    def __init__(self, path, threads=None):
        self.session = _session(path, threads)
        self.metadata = read_metadata(path, self.session)
        shape = self.session.get_inputs()[0].shape
        self.input_size = tuple(s if isinstance(s, int) else -1 for s in shape[:2])

    def run(self, image):
        """The file's outputs (numpy) for one HxWx3 uint8 image."""
        values = self.session.run(list(OUTPUTS), {"image": np.ascontiguousarray(image)})
        return dict(zip(OUTPUTS, values))
