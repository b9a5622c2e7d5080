"""LiteRT (TFLite) files: written from `portable.PortableGraph`, read back and run with
`ai-edge-litert` (XNNPACK).

A file has one signature, "serving_default": `image` uint8 [H, W, 3] (a fixed size, or any
size when exported without one) -> `labels` int32 [H, W], `probabilities` float32 [H, W, C],
`logits` float32 [h', w', C]. Quantized files ("fp16": float16 weights; "int8": every
operation in int8, calibrated on representative images) keep that signature: an int8 model
takes the uint8 image as its quantized input (scale 1, zero point 0) and dequantizes only
its outputs. The class names and colours are in the file's metadata buffer "deeplab_resnet"
(JSON; `read_metadata`).
"""

import json
import logging

import numpy as np
import tensorflow as tf

from deeplab_resnet.errors import BadFileError, DeepLabError

_log = logging.getLogger(__name__)

METADATA_NAME = "deeplab_resnet"
INSTALL_HINT = ('running a .tflite file needs the optional ai-edge-litert: '
                'pip install -e ".[tflite]"')
QUANTIZATIONS = ("fp16", "int8")


def available():
    """Whether ai-edge-litert can be imported."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def _signature(graph, input_size, dtype):
    shape = [None, None, 3] if input_size is None else [input_size[0], input_size[1], 3]

    @tf.function(input_signature=[tf.TensorSpec(shape, dtype, name="image")], autograph=False)
    def serve(image):
        outputs = graph(tf.cast(image, tf.float32)[tf.newaxis])
        return {name: value[0] for name, value in outputs.items()}
    return serve.get_concrete_function()


def convert(graph, input_size=None, quantize=None, calibration=None):
    """The LiteRT flatbuffer (bytes) of a `portable.PortableGraph`.

    Args:
        graph: the `PortableGraph`.
        input_size: (H, W) of a fixed-size file, or None for any size.
        quantize: None (float32), "fp16" or "int8".
        calibration: for "int8", an iterable factory: a function of no arguments giving
            HxWx3 uint8 images (at `input_size` when it is set).
    """
    if quantize == "int8":
        # Float input 0-255, quantized by the converter to uint8 with scale 1, zero point 0.
        function = _signature(graph, input_size, tf.float32)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], graph)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8

        def representative():
            for image in calibration():
                yield {"image": np.asarray(image, np.float32)}
        converter.representative_dataset = representative
    else:
        function = _signature(graph, input_size, tf.uint8)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], graph)
        if quantize == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def with_metadata(flatbuffer, metadata):
    """`flatbuffer` (bytes) with `metadata` (a dict) as the JSON metadata buffer METADATA_NAME."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = (model.metadata or []) + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(path):
    """The METADATA_NAME dict of a .tflite file.

    Raises:
        BadFileError: not a LiteRT file, or one without this project's metadata.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    with open(path, "rb") as f:
        data = f.read()
    try:
        model = schema.Model.GetRootAsModel(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name().decode("utf-8") == METADATA_NAME:
                return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    except (ValueError, IndexError, UnicodeDecodeError, AttributeError) as exc:
        raise BadFileError(f"{path}: not a LiteRT (.tflite) file ({exc})", path=path) from None
    raise BadFileError(f"{path}: a LiteRT file without deeplab_resnet's metadata (not written "
                       "by export.py --format tflite)", path=path)


class Runner:
    """A .tflite file loaded in LiteRT: `run(image)` -> {"labels", "probabilities", "logits"}.

    Args:
        path: the .tflite file.
        threads: CPU threads (default: TensorFlow's intra-op count, else LiteRT's default).
    Raises:
        DeepLabError naming the extra when ai-edge-litert is missing; BadFileError for a
        file LiteRT cannot load.
    """

    def __init__(self, path, threads=None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise DeepLabError(INSTALL_HINT) from None
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self._run = self.interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as exc:
            raise BadFileError(f"{path}: LiteRT cannot load it ({exc})", path=path) from None
        details = self._run.get_input_details()["image"]
        self.input_size = tuple(int(s) for s in details["shape_signature"][:2])

    def run(self, image):
        """The file's outputs (numpy) for one HxWx3 uint8 image."""
        return self._run(image=np.ascontiguousarray(image))
