"""Saving and loading weights: checkpoint prefixes, checkpoint folders, caffemodels.

Every checkpoint of the project holds `params/<caffe name>` (see
`deeplab_resnet.arch` for the naming scheme) and, for DeepLab networks,
`meta/model` (variant name) and `meta/num_classes`, so that loading needs no
extra flags and a contradicting flag is an error. Weights that do not record
them (the 2017 port's checkpoints, see `deeplab_resnet.legacy`; `.npz` files of
convert.py; converted ImageNet ResNets) get them from their parameters' names
and the head's shape.
"""

import contextlib
import functools
import glob
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from deeplab_resnet import arch, caffe, defaults, legacy, npz_file, tf_bundle, utils
from deeplab_resnet.errors import SettingError, DeepLabError, first_line
from deeplab_resnet.model import DeepLabResNet

_META_KEY = "meta/{}/.ATTRIBUTES/VARIABLE_VALUE"
_PARAM_PREFIX = "params/"
_PARAM_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def is_caffemodel(path):
    return str(path).endswith(".caffemodel")


# What a failed read of a checkpoint raises: TensorFlow's errors, and IndexError
# for a `.data` file shorter than its index says.
READ_ERRORS = (tf.errors.OpError, IndexError, ValueError)


def _step_order(prefix):
    """Sort key: `model.ckpt-9000` before `model.ckpt-10000` (by step, then by name)."""
    step = prefix.rsplit("-", 1)[-1]
    return (int(step) if step.isdigit() else -1, prefix)


def latest_in(folder):
    """The newest checkpoint prefix in a folder, None when it holds none.

    The newest is the one its `checkpoint` state file names; without a state
    file, the one with the highest number.

    Raises:
        DeepLabError naming the state file when it cannot be parsed or names a
        checkpoint that is not there (resuming from an older one, or from
        scratch, would silently discard progress).
    """
    state_file = os.path.join(str(folder), "checkpoint")
    if not os.path.isfile(state_file):
        prefixes = [f[: -len(".index")] for f in os.listdir(folder) if f.endswith(".index")]
        return os.path.join(str(folder), max(prefixes, key=_step_order)) if prefixes else None
    state = None
    with contextlib.suppress(*READ_ERRORS):
        state = tf.train.get_checkpoint_state(str(folder))
    if state is None or not state.model_checkpoint_path:
        raise DeepLabError(f"{state_file}: not a readable checkpoint state file (corrupt?); "
                        "delete it to use the newest checkpoint in the folder")
    prefix = state.model_checkpoint_path
    if not os.path.isabs(prefix):
        prefix = os.path.join(str(folder), prefix)
    moved = os.path.join(str(folder), os.path.basename(prefix))
    if not _is_checkpoint(prefix) and _is_checkpoint(moved):
        prefix = moved  # an absolute path written where the folder used to be
    if not _is_checkpoint(prefix):
        raise DeepLabError(f"{state_file}: names checkpoint {prefix}, which is missing (no "
                        f"{os.path.basename(prefix)}.index); delete the state file to use the "
                        "newest checkpoint in the folder")
    return prefix


def _is_checkpoint(prefix):
    """A V2 checkpoint has a `.index`; a V1 one (the 2017 port's) is a single file."""
    return os.path.exists(prefix + ".index") or os.path.isfile(prefix)


def resolve(path):
    """A checkpoint prefix for `path`: a prefix, a `.index` file or a folder of checkpoints."""
    path = str(path)
    if path.endswith(".index"):
        path = path[: -len(".index")]
    if os.path.isdir(path):
        latest = latest_in(path)
        if latest is None:
            raise DeepLabError(f"{path}: folder holds no checkpoint (no *.index file)")
        return latest
    if not os.path.exists(path + ".index"):
        if os.path.isfile(path):
            return path  # a V1 single-file checkpoint (the 2017 port's) has no .index
        raise DeepLabError(f"{path}: no such checkpoint (expected {path}.index, a folder of "
                        "checkpoints, a .caffemodel, an .npz or a 2017-port .ckpt file)")
    return path


def source_path(path):
    """The file actually read for `path`: the prefix a folder of checkpoints resolves to, else
    `path`."""
    if is_caffemodel(path) or _is_array_file(path):
        return str(path)
    return resolve(path)


def _reader(prefix):
    tf_bundle.check(prefix)  # what would abort TensorFlow's reader is refused first
    try:
        return tf.train.load_checkpoint(prefix)
    except READ_ERRORS as exc:
        raise DeepLabError(f"{prefix}: not a readable checkpoint ({first_line(exc)})") from None


def _tensor(reader, prefix, key):
    """One tensor of a checkpoint; a truncated or corrupt `.data` file is a DeepLabError."""
    try:
        return reader.get_tensor(key)
    except READ_ERRORS as exc:
        raise DeepLabError(f"{prefix}: corrupt or truncated checkpoint data "
                        f"({first_line(exc)[:200]})") from None


def corrupt(prefix, exc):
    """The DeepLabError for a checkpoint that failed to restore with `exc`."""
    return DeepLabError(f"{prefix}: corrupt or truncated checkpoint ({first_line(exc)[:200]})")


@contextlib.contextmanager
def writing(path, partial=()):
    """Turns TensorFlow's failure to write `path` (disk full, file too large, no
    permission) into an OSError naming it, after removing `partial` (glob patterns
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
        raise OSError(None, reason or first_line(exc), str(path)) from None


def _is_array_file(path):
    """An `.npz` (read as weights) or a `.npy` (refused: the 2017 port's pickles)."""
    path = str(path)
    if path.endswith(".npy"):
        legacy.refuse_npy(path)
    return path.endswith(".npz")


def _read_npz(path):
    """{name: array} of an .npz (convert.py --data-output-path), never unpickling."""
    return npz_file.read(path)


def _weights(path):
    """{parameter name: (shape, read)} of a weights file; `read()` returns the array.

    Reads this project's checkpoints, the 2017 port's (V1 or V2) and `.npz` files.
    """
    if _is_array_file(path):
        return {name: (a.shape, functools.partial(np.asarray, a))
                for name, a in _read_npz(path).items()}
    prefix = resolve(path)
    reader = _reader(prefix)
    shapes = reader.get_variable_to_shape_map()
    if legacy.is_port_checkpoint(shapes):
        keys = legacy.name_map(shapes)
    else:
        keys = {_param_name(k): k for k in shapes if _is_param_key(k)}
    return {name: (tuple(shapes[key]), functools.partial(_tensor, reader, prefix, key))
            for name, key in keys.items()}


def read_meta(path):
    """(variant, num_classes) recorded in a checkpoint, or (None, None) for a plain one."""
    if _is_array_file(path):
        return None, None
    prefix = resolve(path)
    reader = _reader(prefix)
    if not reader.has_tensor(_META_KEY.format("model")):
        return None, None
    variant = _tensor(reader, prefix, _META_KEY.format("model"))
    variant = variant.decode() if isinstance(variant, bytes) else str(variant)
    return variant, int(_tensor(reader, prefix, _META_KEY.format("num_classes")))


def param_names(path):
    """The caffe names of a weights file's parameters, without reading their values."""
    return list(_weights(path))


def infer_meta(names):
    """(variant, num_classes) of weights that do not record them, from their parameters.

    Args:
        names: {parameter name: shape}.
    Returns:
        the variant whose backbone layers are all present (None if none is), and the
        head's class count (None without a DeepLab head, e.g. an ImageNet ResNet).
    """
    weights = [n for n in names if arch.param_kind(n) == arch.WEIGHTS]
    variant = arch.infer_variant(n[: -len("/" + arch.WEIGHTS)] for n in weights)
    head = names.get(arch.param_name(caffe.HEAD_LAYER, arch.WEIGHTS))
    return variant, (int(head[-1]) if head is not None else None)


def _is_param_key(key):
    return key.startswith(_PARAM_PREFIX) and key.endswith(_PARAM_SUFFIX)


def _param_name(key):
    return key[len(_PARAM_PREFIX): -len(_PARAM_SUFFIX)].replace(".S", "/")


def read_params(path):
    """The parameters of a weights file (see `load_weights`) as {caffe name: numpy array}."""
    return {name: read() for name, (_, read) in _weights(path).items()}


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
        raise DeepLabError(f"{folder}: cannot write checkpoint here ({exc.strerror})") from None
    try:
        variables = {k: tf.Variable(np.asarray(v)) for k, v in params.items()}
        root = {"params": variables}
        if variant is not None:
            root["meta"] = {"model": tf.Variable(variant),
                            "num_classes": tf.Variable(int(num_classes))}
        with writing(prefix):
            tf.train.Checkpoint(**root).write(os.path.join(tmp_dir, "ckpt"))
        files = sorted(os.listdir(tmp_dir), key=lambda f: f.endswith(".index"))
        for name in files:
            os.replace(os.path.join(tmp_dir, name), prefix + name[len("ckpt"):])
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return prefix


def rewrite(source, ckpt_path=None, npz_path=None):
    """Writes a weights file's parameters in this project's formats (convert.py SOURCE).

    Args:
        source: anything `load_weights` reads but a caffemodel: e.g. the 2017
            port's `deeplab_resnet.ckpt` or `model.ckpt-N`, or an `.npz`.
        ckpt_path: checkpoint prefix to write; it records the variant and class
            count when both are known (the DeepLab head present), else nothing.
        npz_path: `.npz` to write (same names and values).
    Returns:
        (variant, num_classes, number of tensors); the first two None when not recorded.
    """
    variant, num_classes = check_meta(source, None, None)
    if variant is None or num_classes is None:
        variant = num_classes = None
    params = read_params(source)
    if not params:
        raise DeepLabError(f"{source}: holds no model parameters to convert")
    if ckpt_path:
        save_params(params, ckpt_path, variant, num_classes)
    if npz_path:
        utils.save_npz(params, npz_path)
    return variant, num_classes, len(params)


def check_meta(path, variant, num_classes, new_head=False):
    """Returns the (variant, num_classes) to build for `path`, flags filled from the file.

    `variant`/`num_classes` are the user's settings (None when not given). A
    setting that contradicts what the checkpoint records is an error, except the class
    count when the head is not restored (`new_head`).
    """
    saved_variant, saved_classes = read_meta(path)
    if saved_variant is None:
        saved_variant, saved_classes = infer_meta({n: s for n, (s, _) in _weights(path).items()})
    if variant is not None and saved_variant is not None and variant != saved_variant:
        raise SettingError(f"{path}: checkpoint holds model '{saved_variant}', "
                           f"but {{variant}} {variant} was given", "variant")
    if saved_classes is None or (new_head and num_classes is not None):
        return saved_variant or variant, num_classes
    if num_classes is not None and num_classes != saved_classes:
        raise SettingError(f"{path}: checkpoint has {saved_classes} classes, "
                           f"but {{num_classes}} {num_classes} was given", "num_classes")
    return saved_variant or variant, saved_classes


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
            raise DeepLabError(f"{source}: '{name}' has shape {tuple(value.shape)}, "
                            f"model '{model.variant}' expects {tuple(var.shape)}")
        var.assign(value.astype(var.dtype.as_numpy_dtype))
    if missing:
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise DeepLabError(f"{source}: {len(missing)} variables of model '{model.variant}' "
                        f"are missing ({shown})")


def load_weights(path, variant=None, num_classes=None, new_head=False, prototxt=None,
                 **model_kwargs):
    """Builds a DeepLabResNet and fills it from a checkpoint or a `.caffemodel`.

    Args:
        path: checkpoint prefix, folder of checkpoints, `.caffemodel`, `.npz`
            (convert.py --data-output-path), or a 2017-port checkpoint (V1 file
            or V2 prefix).
        variant, num_classes: the user's flags, None when not given; taken
            from the file when it records them, else from its parameters.
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
        params, found_classes = caffe.caffemodel_weights(path, variant, prototxt,
                                                         new_head=new_head)
        if num_classes is not None and found_classes != num_classes and not new_head:
            raise SettingError(f"{path}: caffemodel has {found_classes} classes, "
                               f"but {{num_classes}} {num_classes} was given", "num_classes")
        num_classes = num_classes or found_classes
        variant = variant or infer_meta({n: np.shape(v) for n, v in params.items()})[0]
    else:
        variant, num_classes = check_meta(path, variant, num_classes, new_head=new_head)
        params = read_params(path)
    model = DeepLabResNet(variant or defaults.VARIANT, num_classes or defaults.NUM_CLASSES,
                          **model_kwargs)
    assign_params(model, params, new_head=new_head, source=str(path))
    model.mark_statistics_trained()
    return model
