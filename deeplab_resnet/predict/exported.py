"""LiteRT (.tflite) and ONNX (.onnx) exports: written from a `Predictor`, loaded back as a
predictor that runs them (`ExportedPredictor`), so that `Segmenter`, evaluate.py and
inference.py check an export the way they check weights.

Each file records in its metadata (JSON) the variant, the classes' names and colours and
the test protocol it was exported with (`metadata`).
"""

import logging
import os

import numpy as np

from deeplab_resnet.errors import SettingError
from deeplab_resnet.files import atomic_path
from deeplab_resnet.predict import litert, onnx_file
from deeplab_resnet.predict.host import HostSide

_log = logging.getLogger(__name__)

FORMATS = ("savedmodel", "tflite", "onnx")
EXTENSIONS = {".tflite": "tflite", ".onnx": "onnx"}
METADATA_VERSION = 1


def file_format(path):
    """"tflite" or "onnx" for a path ending .tflite / .onnx, else None."""
    return EXTENSIONS.get(os.path.splitext(str(path))[1].lower())


def metadata(segmenter, quantize=None, input_size=None):
    """The dict an export records: model, classes (names, RGB colours), protocol, format."""
    predictor = segmenter.predictor
    return {"deeplab_resnet_export": METADATA_VERSION, "model": segmenter.model,
            "num_classes": segmenter.num_classes, "class_names": list(segmenter.class_names),
            "colors": np.asarray(segmenter.palette)[:segmenter.num_classes].tolist(),
            "palette": np.asarray(segmenter.palette).tolist(),
            "scales": list(predictor.scales), "flip": predictor.flip,
            "deeplab_protocol": predictor.deeplab_protocol, "pad_size": predictor.pad_size,
            "quantize": quantize, "input_size": None if input_size is None else list(input_size),
            "weights": os.path.basename(str(segmenter.weights))}


def check_quantize(format, quantize, calibration):
    """Raises SettingError for a quantization the format lacks, or int8 without images."""
    if quantize is None:
        return
    if quantize not in litert.QUANTIZATIONS:
        raise SettingError(f"{{quantize}} '{quantize}': unknown (choose from "
                           f"{', '.join(litert.QUANTIZATIONS)})", "quantize")
    if format != "tflite":
        raise SettingError(f"{{quantize}} {quantize}: only for --format tflite", "quantize")
    if quantize == "int8" and calibration is None:
        raise SettingError("{quantize} int8 needs representative images to calibrate on: "
                           "give {calibration_list} (and --data-dir)", "quantize",
                           "calibration_list")


def write(segmenter, path, format, quantize=None, input_size=None, calibration=None):
    """Writes `segmenter`'s network and protocol as a .tflite or .onnx file at `path`,
    atomically.

    Args:
        segmenter: a `Segmenter` computing in fp32.
        path: the file to write.
        format: "tflite" or "onnx".
        quantize: None, "fp16" or "int8" (tflite only).
        input_size: (H, W) of a fixed-size file, or None for any size.
        calibration: for int8, a function of no arguments giving HxWx3 uint8 images.
    """
    from deeplab_resnet.predict import portable
    check_quantize(format, quantize, calibration)
    if segmenter.predictor.crf is not None:
        raise SettingError("{crf}: a dense CRF is not part of an exported network", "crf")
    graph = portable.PortableGraph(segmenter.predictor)
    meta = metadata(segmenter, quantize, input_size)
    if format == "onnx":
        data = onnx_file.convert(graph, input_size, meta)
    else:
        data = litert.with_metadata(litert.convert(graph, input_size, quantize, calibration),
                                    meta)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def _threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class ExportedPredictor(HostSide):
    """A .tflite or .onnx export run by LiteRT or onnxruntime, with the host side of every
    predictor (dense CRF, tiles; batches run one image at a time).

    Args:
        path: the file.
        crf: a `crf.CRFParams`, or None.
        threads: CPU threads (default: the CPUs this process may use).
    Attributes:
        metadata: the file's metadata (`metadata`).
        format: "tflite" or "onnx".
    """

    def __init__(self, path, crf=None, threads=None):
        self.format = file_format(path)
        threads = threads or _threads()
        if self.format == "tflite":
            self.runner = litert.Runner(path, threads)
            self.metadata = litert.read_metadata(path)
        else:
            self.runner = onnx_file.Runner(path, threads)
            self.metadata = self.runner.metadata
        self.path = str(path)
        self.crf = crf
        self.scales = tuple(self.metadata["scales"])
        self.flip = self.metadata["flip"]
        self.deeplab_protocol = self.metadata["deeplab_protocol"]
        self.pad_size = self.metadata["pad_size"]

    def _run(self, image):
        fixed = self.runner.input_size
        if min(fixed) > 0 and tuple(image.shape[:2]) != fixed:
            raise SettingError(f"image {image.shape[0]}x{image.shape[1]}: {self.path} takes "
                               f"only {fixed[0]}x{fixed[1]} images (exported with --input-size; "
                               "export without it for any size, or predict by tiles of that "
                               "size)", path=self.path)
        return self.runner.run(image)

    def outputs_many(self, images):
        out = []
        for image in images:
            outputs = self._run(image)
            out.append((outputs["logits"], outputs["probabilities"]))
        return out

    def _labels_many(self, images):
        return [self._run(image)["labels"].astype(np.int32) for image in images]
