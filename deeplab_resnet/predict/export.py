"""Export: a `predict.Predictor` as a TensorFlow SavedModel for serving, written atomically."""

import os
import shutil

import tensorflow as tf

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


def export(predictor, output_dir):
    """Saves `predictor` as a SavedModel at `output_dir`, atomically.

    Args:
        predictor: a `predict.Predictor`; its `serve` is the serving signature
            (the network only: a dense CRF is not a TensorFlow op).
        output_dir: absolute path of the folder to create (see `check_output_dir`).
    Raises:
        OSError naming `output_dir` when the write fails (nothing is left behind).
    """
    tmp = temporary_dir(os.path.dirname(output_dir), ".tmp-export-")
    try:
        with checkpoint.writing(output_dir):
            tf.saved_model.save(predictor, tmp, signatures={
                "serving_default": predictor.serve.get_concrete_function()})
        if os.path.isdir(output_dir):
            # An empty folder left by the user: rename() replaces it only when it is empty.
            os.rmdir(output_dir)
        os.replace(tmp, output_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
