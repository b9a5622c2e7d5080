"""Saving and loading weights: checkpoint prefixes, checkpoint folders, caffemodels.

Every checkpoint of the project holds `params/<caffe name>` (see
`deeplab_resnet.arch` for the naming scheme) and, for DeepLab networks,
`meta/model` (variant name) and `meta/num_classes`, so that loading needs no
extra flags and a contradicting flag is an error.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf

from deeplab_resnet import arch, caffe, defaults
from deeplab_resnet.errors import SettingError, UserError, first_line
from deeplab_resnet.model import DeepLabResNet

_META_KEY = "meta/{}/.ATTRIBUTES/VARIABLE_VALUE"
_PARAM_PREFIX = "params/"
_PARAM_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def is_caffemodel(path):
    return str(path).endswith(".caffemodel")


def resolve(path):
    """A checkpoint prefix for `path`: a prefix, a `.index` file or a folder of checkpoints."""
    path = str(path)
    if path.endswith(".index"):
        path = path[: -len(".index")]
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            prefixes = sorted(f[: -len(".index")] for f in os.listdir(path) if f.endswith(".index"))
            if not prefixes:
                raise UserError(f"{path}: folder holds no checkpoint (no *.index file)")
            latest = os.path.join(path, prefixes[-1])
        return latest
    if not os.path.exists(path + ".index"):
        raise UserError(f"{path}: no such checkpoint (expected {path}.index, a folder of "
                        "checkpoints or a .caffemodel)")
    return path


def _reader(prefix):
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as exc:
        raise UserError(f"{prefix}: not a readable checkpoint ({first_line(exc)})") from None


def read_meta(path):
    """(variant, num_classes) recorded in a checkpoint, or (None, None) for a plain one."""
    reader = _reader(resolve(path))
    if not reader.has_tensor(_META_KEY.format("model")):
        return None, None
    variant = reader.get_tensor(_META_KEY.format("model"))
    variant = variant.decode() if isinstance(variant, bytes) else str(variant)
    return variant, int(reader.get_tensor(_META_KEY.format("num_classes")))


def param_names(path):
    """The caffe names of a checkpoint's `params/*` tensors, without reading their values."""
    keys = _reader(resolve(path)).get_variable_to_shape_map()
    return [_param_name(k) for k in keys if _is_param_key(k)]


def _is_param_key(key):
    return key.startswith(_PARAM_PREFIX) and key.endswith(_PARAM_SUFFIX)


def _param_name(key):
    return key[len(_PARAM_PREFIX): -len(_PARAM_SUFFIX)].replace(".S", "/")


def read_params(path):
    """All `params/*` tensors of a checkpoint as {caffe name: numpy array}."""
    reader = _reader(resolve(path))
    out = {}
    for key in reader.get_variable_to_shape_map():
        if _is_param_key(key):
            out[_param_name(key)] = reader.get_tensor(key)
    return out


def save_params(params, prefix, variant=None, num_classes=None):
    """Writes {name: array} as a checkpoint at `prefix`, atomically.

    The files are written under a temporary prefix in the same folder and
    renamed into place, the `.index` last, so an interrupted save never leaves
    a checkpoint that looks complete.
    """
    prefix = os.path.abspath(str(prefix))
    folder = os.path.dirname(prefix)
    try:
        os.makedirs(folder, exist_ok=True)
        tmp_dir = tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=folder)
    except OSError as exc:
        raise UserError(f"{folder}: cannot write checkpoint here ({exc.strerror})") from None
    try:
        variables = {k: tf.Variable(np.asarray(v)) for k, v in params.items()}
        root = {"params": variables}
        if variant is not None:
            root["meta"] = {"model": tf.Variable(variant), "num_classes": tf.Variable(int(num_classes))}
        tf.train.Checkpoint(**root).write(os.path.join(tmp_dir, "ckpt"))
        files = sorted(os.listdir(tmp_dir), key=lambda f: f.endswith(".index"))
        for name in files:
            os.replace(os.path.join(tmp_dir, name), prefix + name[len("ckpt"):])
    finally:
        for name in os.listdir(tmp_dir):
            os.remove(os.path.join(tmp_dir, name))
        os.rmdir(tmp_dir)
    return prefix


def check_meta(path, variant, num_classes, new_head=False):
    """Returns the (variant, num_classes) to build for `path`, flags filled from the file.

    `variant`/`num_classes` are the user's settings (None when not given). A
    setting that contradicts what the checkpoint records is an error, except the class
    count when the head is not restored (`new_head`).
    """
    saved_variant, saved_classes = read_meta(path)
    if saved_variant is not None:
        if variant is not None and variant != saved_variant:
            raise SettingError(f"{path}: checkpoint holds model '{saved_variant}', "
                               f"but {{variant}} {variant} was given", "variant")
        if new_head and num_classes is not None:
            return saved_variant, num_classes
        if num_classes is not None and num_classes != saved_classes:
            raise SettingError(f"{path}: checkpoint has {saved_classes} classes, "
                               f"but {{num_classes}} {num_classes} was given", "num_classes")
        return saved_variant, saved_classes
    return variant, num_classes


def fold_stem_bias(params, stem):
    """Folds a stem bias (ImageNet ResNets have `conv1/biases`) into its BatchNorm mean.

    BN(x + b) = BN'(x) with mean' = mean - b, so the DeepLab stem, which has no
    bias, computes the same function.

    Args:
        params: {name: array}.
        stem: the `arch.Conv` of the stem.
    """
    bias, mean = arch.param_name(stem.name, arch.BIASES), stem.bn_param("mean")
    if bias not in params or mean not in params:
        return params
    params = dict(params)
    params[mean] = np.asarray(params[mean]) - np.asarray(params.pop(bias))
    return params


def assign_params(model, params, new_head=False, source="weights"):
    """Copies {name: array} into a model's variables, checking names and shapes.

    Every model variable must be present (except the head with `new_head`);
    extra entries are ignored only when they are classifier layers of another
    net (anything that is not a model variable is listed in the error).
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
            raise UserError(f"{source}: '{name}' has shape {tuple(value.shape)}, "
                            f"model '{model.variant}' expects {tuple(var.shape)}")
        var.assign(value.astype(var.dtype.as_numpy_dtype))
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise UserError(f"{source}: {len(missing)} variables of model '{model.variant}' "
                        f"are missing ({shown})")


def load_weights(path, variant=None, num_classes=None, new_head=False, prototxt=None,
                 **model_kwargs):
    """Builds a DeepLabResNet and fills it from a checkpoint or a `.caffemodel`.

    Args:
        path: checkpoint prefix, folder of checkpoints, or `.caffemodel`.
        variant, num_classes: the user's flags, None when not given; taken
            from the checkpoint when it records them.
        new_head: keep the freshly initialised head instead of restoring it;
            it has `num_classes` classes, 21 when not given (not the count of
            the restored weights' head, which is dropped).
        prototxt: deploy prototxt for a `.caffemodel` (default: the one
            `caffe.deploy_prototxt` generates for the variant).
    Returns:
        the model.
    """
    if new_head and num_classes is None:
        num_classes = defaults.NUM_CLASSES
    if is_caffemodel(path):
        variant = variant or defaults.VARIANT
        params, found_classes = caffe.caffemodel_weights(path, variant, prototxt, new_head=new_head)
        if num_classes is not None and found_classes != num_classes and not new_head:
            raise SettingError(f"{path}: caffemodel has {found_classes} classes, "
                               f"but {{num_classes}} {num_classes} was given", "num_classes")
        num_classes = num_classes or found_classes
    else:
        variant, num_classes = check_meta(path, variant, num_classes, new_head=new_head)
        params = read_params(path)
    model = DeepLabResNet(variant or defaults.VARIANT, num_classes or defaults.NUM_CLASSES,
                          **model_kwargs)
    assign_params(model, params, new_head=new_head, source=str(path))
    model.mark_statistics_trained()
    return model
