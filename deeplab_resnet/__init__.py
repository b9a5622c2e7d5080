"""DeepLab-v2 ResNet for TensorFlow 2: Caffe-exact network, training, evaluation.

The Python API (the same code the commands run; see the README's "Python API"):

    Segmenter     load any weights (checkpoint, folder, .caffemodel, .npz, the
                  2017 port's files); predict, predict_many, evaluate, export
    Prediction    labels, probabilities and logits of one image
    Scores        mean IoU, per-class IoU, accuracies, the confusion matrix
    convert       Caffe prototxt + caffemodel -> checkpoint, .npz, TF2 code
    TrainConfig, train, TrainResult, Callback, StopRequest
                  training from Python (deeplab_resnet.training)
    DeepLabError  the base of the typed errors: BadFileError (a file),
                  SettingError (a setting), WriteError (an output)

The library never prints: it logs on the "deeplab_resnet" logger, silent until
the application configures `logging` (e.g. `logging.basicConfig()`). Only the
error classes are imported with the package; the rest (and TensorFlow) load on
first use, so `import deeplab_resnet` stays light.

Example:
    >>> import deeplab_resnet
    >>> seg = deeplab_resnet.Segmenter.load("ckpt/voc12")
    >>> labels = seg.predict("photo.jpg").labels
"""

import importlib
import logging
import sys

from deeplab_resnet._moved import MovedFinder
from deeplab_resnet.errors import BadFileError, DeepLabError, SettingError, WriteError

__version__ = "0.2.0"

# Silent unless the application configures logging: no "last resort" output on stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())

# The flat layout's module paths, importable for one release (see `_moved`).
if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
    sys.meta_path.append(MovedFinder())

# name -> the module that defines it, imported on first access (PEP 562).
_LAZY = {
    "Segmenter": "deeplab_resnet.predict.segmenter",
    "Prediction": "deeplab_resnet.predict.prediction",
    "Scores": "deeplab_resnet.predict.evaluation",
    "convert": "deeplab_resnet.weights.conversion",
    "TrainConfig": "deeplab_resnet.training",
    "TrainResult": "deeplab_resnet.training",
    "Callback": "deeplab_resnet.training",
    "StopRequest": "deeplab_resnet.training",
    "train": "deeplab_resnet.training",
}

__all__ = ["BadFileError", "DeepLabError", "SettingError", "WriteError", *_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'deeplab_resnet' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
