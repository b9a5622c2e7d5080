"""Loading weights: any weights path opened once, checked, and made into a model.

Every checkpoint of the project holds `params/<caffe name>` (see
`deeplab_resnet.model.arch` for the naming scheme) and, for DeepLab networks,
`meta/model` (variant name), `meta/num_classes` and optionally `meta/class_names` and
`meta/class_colours` (int32 [num_classes, 3], RGB),
so that loading needs no extra flags and a contradicting flag is an error. Weights
that do not record them (the 2017 port's checkpoints, see `deeplab_resnet.weights.legacy`;
`.npz` files of convert.py; converted ImageNet ResNets) get them from their
parameters' names and the head's shape.

The pipeline, each step in one place: `open_weights` has the path resolved once
(`paths.locate`), a checkpoint's files checked (`tf_bundle`), the file opened once by its
format's reader (`tf_reader`, the one reader of TensorFlow checkpoints; `npz_file`;
`caffe`) into a `weights_file.WeightsFile` by its one factory (metadata checked), and
that object is what the rest takes:
`WeightsFile.build_model` (shapes checked against the architecture, values read and
checked for finiteness), resuming, the run record, `rewrite` and conversion. This module
also hands on the names of `paths` and `saving` that its callers use, so that they
import one module for weights.
"""

import functools

import numpy as np

from deeplab_resnet.errors import BadFileError
from deeplab_resnet.files import save_npz
from deeplab_resnet.model import arch
from deeplab_resnet.weights import caffe
from deeplab_resnet.weights import legacy
from deeplab_resnet.weights import npz_file
from deeplab_resnet.weights import paths
from deeplab_resnet.weights import tf_bundle
from deeplab_resnet.weights import tf_reader
from deeplab_resnet.weights import weights_file as weights
from deeplab_resnet.weights.paths import (READ_ERRORS, latest_in,  # noqa: F401
                                          resolve, source_path)
from deeplab_resnet.weights.saving import (check_class_names, class_names_meta,  # noqa: F401
                                           recorded_classes, save_params, writing)
from deeplab_resnet.weights.tf_reader import corrupt  # noqa: F401
from deeplab_resnet.weights.weights_file import fold_stem_bias


def open_weights(path, prototxt=None, variant=None):
    """Opens a weights file once: the path resolved, the file read, metadata checked.

    Args:
        path: anything `load_weights` takes.
        prototxt: deploy prototxt of a `.caffemodel` (see `caffe.open_caffemodel`).
        variant: the variant a `.caffemodel` without `prototxt` is matched to (None:
            the one whose layers it has); ignored for other files.
    Returns:
        a `weights.WeightsFile`.
    Raises:
        BadFileError: a missing, unreadable or inconsistent file.
    """
    kind, path = paths.locate(path)
    if kind == paths.CAFFEMODEL:
        return caffe.open_caffemodel(path, variant=variant, prototxt=prototxt)
    if kind == paths.NPY:
        legacy.refuse_npy(path)
    if kind == paths.NPZ:
        arrays = npz_file.read(path)
        parts = {"format": "npz", "tensors": {name: (a.shape, functools.partial(np.asarray, a))
                                              for name, a in arrays.items()}}
    else:
        tf_bundle.check(path)  # what would abort TensorFlow's reader is refused first
        parts = tf_reader.open_checkpoint(path)
    return weights.opened(path, **parts)


def describe(path, prototxt=None):
    """What a weights file is, without reading the values of a checkpoint's or a caffemodel's
    tensors (an `.npz` is read whole: `npz_file` checks each member as it reads it).

    Args:
        path: anything `load_weights` takes.
        prototxt: deploy prototxt of a `.caffemodel`.
    Returns:
        the opened `weights.WeightsFile`: `.path` (the file actually read), `.format`,
        `.variant`, `.num_classes`, `.class_names` (None when unknown or not recorded)
        and `.recorded`.
    Example:
        >>> info = describe("checkpoints/deeplab_voc12")
        >>> info.path, info.variant, info.num_classes
        ('checkpoints/deeplab_voc12', 'resnet101', 21)
    """
    return open_weights(path, prototxt)


def read_meta(path):
    """(variant, num_classes) recorded in a checkpoint, or (None, None) for a plain one."""
    opened = open_weights(path)
    return (opened.variant, opened.num_classes) if opened.recorded else (None, None)


def read_params(path):
    """Every parameter of a weights file (see `load_weights`) as {caffe name: numpy array}.

    Raises:
        BadFileError: an unreadable file, or a value that is not finite.
    """
    return open_weights(path).read_all()


def rewrite(source, ckpt_path=None, npz_path=None, class_names=None, classes=None):
    """Writes a weights file's parameters in this project's formats (convert.py SOURCE).

    Args:
        source: anything `load_weights` reads but a caffemodel: e.g. the 2017
            port's `deeplab_resnet.ckpt` or `model.ckpt-N`, or an `.npz`.
        ckpt_path: checkpoint prefix to write; it records the variant and class
            count when both are known (the DeepLab head present), else nothing,
            and the class names the source records.
        npz_path: `.npz` to write (same names and values).
        class_names: names to record instead of the source's (one per class).
        classes: a classes file (path or `data.classes.Classes`) whose names and colours
            are recorded instead of the source's.
    Returns:
        (variant, num_classes, number of tensors); the first two None when not recorded.
    Raises:
        BadFileError: the source's tensors do not fit the variant their names say
            (a shape, an unknown tensor beside a DeepLab head, a non-finite value).
    """
    opened = open_weights(source)
    variant, num_classes = opened.variant, opened.num_classes
    if variant is not None:  # (a recorded one's check, made as the file opened, is reused)
        opened.check(arch.architecture(variant, num_classes or 1), new_head=num_classes is None)
    if variant is None or num_classes is None:
        variant = num_classes = None
    names, colours = recorded_classes(classes, class_names, num_classes)
    params = opened.read_all()
    if not params:
        raise BadFileError(f"{opened.path}: holds no model parameters to convert",
                           path=opened.path)
    if ckpt_path:
        keep = variant is not None and names is None
        save_params(params, ckpt_path, variant, num_classes,
                    opened.class_names if keep else names,
                    opened.class_colours if keep else colours)
    if npz_path:
        save_npz(params, npz_path)
    return variant, num_classes, len(params)


def check_meta(path, variant, num_classes, new_head=False):
    """Returns the (variant, num_classes) to build for `path`, flags filled from the file.

    `variant`/`num_classes` are the user's settings (None when not given). A
    setting that contradicts what the checkpoint records is an error, except the class
    count when the head is not restored (`new_head`); see `weights.WeightsFile.settle`.
    """
    return open_weights(path, variant=variant).settle(variant, num_classes, new_head)


def assign_params(model, params, new_head=False, source="weights"):
    """Copies {name: array} into a model's variables, checking names and shapes.

    Every model variable must be present (except the head with `new_head`);
    other entries are ignored.
    """
    params = fold_stem_bias(params, model.arch.stem)
    missing = []
    for name, var in model.params.items():
        if new_head and arch.is_head_variable(name):
            continue
        if name not in params:
            missing.append(name)
            continue
        value = np.asarray(params[name])
        if tuple(value.shape) != tuple(var.shape):
            raise BadFileError(f"{source}: '{name}' has shape {tuple(value.shape)}, "
                               f"model '{model.variant}' expects {tuple(var.shape)}", path=source)
        var.assign(np.asarray(value, dtype=var.dtype.as_numpy_dtype))
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise BadFileError(f"{source}: {len(missing)} variables of model '{model.variant}' "
                           f"are missing ({shown})", path=source)


def load_weights(path, variant=None, num_classes=None, new_head=False, prototxt=None,
                 **model_kwargs):
    """Builds a DeepLabResNet and fills it from a checkpoint or a `.caffemodel`.

    The file is opened once (`open_weights`); its metadata and every tensor's shape
    are checked against the architecture, and every value for finiteness, before
    the model is built.

    Args:
        path: checkpoint prefix, folder of checkpoints, `.caffemodel`, `.npz`
            (convert.py --data-output-path), or a 2017-port checkpoint (V1 file
            or V2 prefix).
        variant, num_classes: the user's settings, None when not given; taken
            from the file when it records them, else from its parameters.
        new_head: keep the freshly initialised head instead of restoring it;
            it has `num_classes` classes, 21 when not given (not the count of
            the restored weights' head, which is dropped).
        prototxt: deploy prototxt for a `.caffemodel` (default: its blobs are
            matched to the architecture of the variant directly).
        **model_kwargs: passed to `DeepLabResNet`.
    Returns:
        the model.
    Raises:
        BadFileError: an unreadable file, or one whose tensors do not fit.
        SettingError: a setting that contradicts the file.
    Example:
        >>> model = load_weights("checkpoints/deeplab_voc12")
        >>> model.variant, model.num_classes
        ('resnet101', 21)
    """
    return open_weights(path, prototxt=prototxt, variant=variant).build_model(
        variant, num_classes, new_head, prototxt, **model_kwargs)
