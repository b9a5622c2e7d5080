"""Export: a `predict.Predictor` as a TensorFlow SavedModel for serving, written atomically."""

import os
import shutil
import tempfile

import tensorflow as tf

from deeplab_resnet import checkpoint, utils


def export(predictor, output_dir):
    """Saves `predictor` as a SavedModel at `output_dir`, atomically.

    Args:
        predictor: a `predict.Predictor`; its `serve` is the serving signature.
        output_dir: absolute path of the folder to create.
    """
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=os.path.dirname(output_dir))
    try:
        utils.plain_mode(tmp)
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
