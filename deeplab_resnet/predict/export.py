"""Export: a `predict.Predictor` as a TensorFlow SavedModel for serving, written atomically."""

import os
import shutil

import numpy as np
import tensorflow as tf

from deeplab_resnet.data.datasets import VOC_PALETTE
from deeplab_resnet.files import temporary_dir, writable_dir
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.errors import SettingError


def check_output_dir(path, field="output_dir"):
    """The absolute SavedModel folder for `path`, checked before any work is done.

    Args:
        path: the folder to create; it must not exist, or be an empty folder.
        field: the setting's name in the messages (e.g. "output_dir").
    Returns:
        the absolute path; its parent folder exists (created if needed) and is writable.
    Raises:
        SettingError naming `field` when `path` holds something or its parent is not writable.
    """
    path = os.path.abspath(str(path))
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise SettingError(f"{{{field}}} {path}: already exists and is not an empty folder",
                           field, path=path)
    writable_dir(os.path.dirname(path), field)
    return path


def _with_classes(predictor, class_names, palette):
    """A module holding `predictor` and its classes: `class_names` (string [C]) and
    `class_colours` (uint8 [C, 3]), as variables and as the `classes` signature."""
    root = tf.Module()
    root.predictor = predictor
    count = predictor.model.num_classes
    root.class_names = tf.Variable([str(name) for name in class_names], trainable=False,
                                   name="class_names")
    root.class_colours = tf.Variable(np.asarray(palette, np.uint8)[:count], trainable=False,
                                     name="class_colours")
    root.classes = tf.function(lambda: {"class_names": tf.identity(root.class_names),
                                        "class_colours": tf.identity(root.class_colours)},
                               input_signature=[])
    return root


def export(predictor, output_dir, class_names=None, palette=None):
    """Saves `predictor` as a SavedModel at `output_dir`, atomically.

    Args:
        predictor: a `predict.Predictor`; its `serve` is the serving signature
            (the network only: a dense CRF is not a TensorFlow op).
        output_dir: absolute path of the folder to create (see `check_output_dir`).
        class_names, palette: the classes' names and colours (256x3) to record: the
            SavedModel's `class_names` and `class_colours` variables and its `classes`
            signature (no inputs) return them (default: class_<i>, VOC's colours).
    Raises:
        OSError naming `output_dir` when the write fails (nothing is left behind).
    """
    count = predictor.model.num_classes
    class_names = [f"class_{i}" for i in range(count)] if class_names is None else class_names
    palette = VOC_PALETTE if palette is None else palette
    tmp = temporary_dir(os.path.dirname(output_dir), ".tmp-export-")
    try:
        root = _with_classes(predictor, class_names, palette)
        with checkpoint.writing(output_dir):
            tf.saved_model.save(root, tmp, signatures={
                "serving_default": predictor.serve.get_concrete_function(),
                "classes": root.classes.get_concrete_function()})
        if os.path.isdir(output_dir):
            # An empty folder left by the user: rename() replaces it only when it is empty.
            os.rmdir(output_dir)
        os.replace(tmp, output_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
