"""Writing weights as this project's checkpoints: atomically, with their metadata.

`save_params` writes {name: array} as `params/<name>` with `meta/model`,
`meta/num_classes`, `meta/class_names` and `meta/class_colours` (see `checkpoint`'s
docstring); `recorded_classes` settles the classes to record, `class_names_meta` and
`check_class_names` serve training's checkpoints too, and
`writing` turns TensorFlow's failure to write a file into a `WriteError` naming it.
"""

import contextlib
import glob
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from deeplab_resnet.data import classes as classes_lib
from deeplab_resnet.errors import SettingError, WriteError, first_line


@contextlib.contextmanager
def writing(path, partial=()):
    """Turns TensorFlow's failure to write `path` (disk full, file too large, no
    permission) into a WriteError naming it, after removing `partial` (glob patterns
    of what the failed write may have left)."""
    try:
        yield
    except tf.errors.OpError as exc:
        for pattern in partial:
            for leftover in glob.glob(pattern):
                if os.path.isdir(leftover):
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    os.remove(leftover)
        # TensorFlow's message: "<op> <file being written>; <reason> [Op:Name]".
        reason = first_line(exc).rpartition("; ")[2].partition(" [Op:")[0]
        raise WriteError(path, reason or first_line(exc)) from None


def class_names_meta(class_names, class_colours=None):
    """The `meta` entries that record the classes in a checkpoint: {"class_names": a string
    variable} when names are given, {"class_colours": an int32 [C, 3] variable} when colours
    are; e.g. tf.train.Checkpoint(meta={**model.meta, **class_names_meta(names, colours)})."""
    meta = {}
    if class_names is not None:
        meta["class_names"] = tf.Variable(tf.constant([str(n) for n in class_names], tf.string),
                                          trainable=False, name="class_names")
    if class_colours is not None:
        meta["class_colours"] = tf.Variable(
            tf.constant(np.asarray(class_colours, np.int32).reshape(-1, 3)), trainable=False,
            name="class_colours")
    return meta


def check_class_names(class_names, num_classes):
    """A SettingError naming `class_names` unless it is None or one name per class.

    Args:
        class_names: the names given, or None.
        num_classes: the model's class count (None: not a DeepLab model, no head to name).
    """
    if class_names is None:
        return
    if num_classes is None:
        raise SettingError("{class_names}: the weights hold no DeepLab head whose classes "
                           "they could name", "class_names")
    if len(class_names) != num_classes:
        raise SettingError(f"{{class_names}}: {len(class_names)} names for {num_classes} "
                           "classes: give one name per class, in class order", "class_names")


def recorded_classes(classes, class_names, num_classes):
    """(names, colours) to record for a head of `num_classes` classes (None: no head):
    those of `classes` (a classes file's path or a `Classes`), else `class_names` and no
    colours; each checked against the class count (a SettingError naming the setting)."""
    classes = classes_lib.as_classes(classes)
    if classes is None:
        check_class_names(class_names, num_classes)
        return class_names, None
    if num_classes is None:
        raise SettingError("{classes}: the weights hold no DeepLab head whose classes "
                           "they could name", "classes")
    classes_lib.settle(classes, num_classes, class_names)
    return classes.names, classes.colours


def save_params(params, prefix, variant=None, num_classes=None, class_names=None,
                class_colours=None):
    """Writes {name: array} as a checkpoint at `prefix`, atomically.

    Args:
        params: {name: array}.
        prefix: the checkpoint prefix to write.
        variant, num_classes: recorded as `meta/model`, `meta/num_classes` (DeepLab nets).
        class_names: recorded as `meta/class_names` when given (one per class).
        class_colours: recorded as `meta/class_colours` when given ((R, G, B) per class).
    Returns:
        the absolute prefix.

    The files are written under a temporary prefix in the same folder and
    renamed into place, the `.index` last, so an interrupted save never leaves
    a checkpoint that looks complete.
    """
    check_class_names(class_names, num_classes if variant is not None else None)
    prefix = os.path.abspath(str(prefix))
    folder = os.path.dirname(prefix)
    try:
        os.makedirs(folder, exist_ok=True)
        tmp_dir = tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=folder)
    except OSError as exc:
        raise WriteError(folder, f"cannot write checkpoint here ({exc.strerror})") from None
    try:
        root = {"params": {k: tf.Variable(np.asarray(v)) for k, v in params.items()}}
        if variant is not None:
            root["meta"] = {"model": tf.Variable(variant),
                            "num_classes": tf.Variable(int(num_classes)),
                            **class_names_meta(class_names, class_colours)}
        with writing(prefix):
            tf.train.Checkpoint(**root).write(os.path.join(tmp_dir, "ckpt"))
        files = sorted(os.listdir(tmp_dir), key=lambda f: f.endswith(".index"))
        for name in files:
            os.replace(os.path.join(tmp_dir, name), prefix + name[len("ckpt"):])
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return prefix
