"""Saving and loading weights: checkpoint prefixes, checkpoint folders, caffemodels.

Every checkpoint of the project holds `params/<caffe name>` (see
`deeplab_resnet.model.arch` for the naming scheme) and, for DeepLab networks,
`meta/model` (variant name), `meta/num_classes` and optionally `meta/class_names` and
`meta/class_colours` (int32 [num_classes, 3], RGB),
so that loading needs no extra flags and a contradicting flag is an error. Weights
that do not record them (the 2017 port's checkpoints, see `deeplab_resnet.weights.legacy`;
`.npz` files of convert.py; converted ImageNet ResNets) get them from their
parameters' names and the head's shape.

Every reader goes through `open_weights`, which resolves the path once and opens the
file once into a `weights.WeightsFile` (checked metadata, tensor shapes, values read
on demand and checked for finiteness). A TensorFlow checkpoint is opened by `_reader`
only, an `.npz` read by `_read_npz` only.
"""

import contextlib
import functools
import glob
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from deeplab_resnet.data import classes as classes_lib
from deeplab_resnet.files import save_npz
from deeplab_resnet import defaults
from deeplab_resnet.model import arch
from deeplab_resnet.weights import caffe
from deeplab_resnet.weights import legacy
from deeplab_resnet.weights import npz_file
from deeplab_resnet.weights import tf_bundle
from deeplab_resnet.weights import weights_file as weights
from deeplab_resnet.errors import (BadFileError, SettingError, WriteError, first_line,
                                   tensorflow_reason)
from deeplab_resnet.model.network import DeepLabResNet

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
        BadFileError naming the state file when it cannot be parsed or names a
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
        raise BadFileError(f"{state_file}: not a readable checkpoint state file (corrupt?); "
                           "delete it to use the newest checkpoint in the folder", path=state_file)
    prefix = state.model_checkpoint_path
    if not os.path.isabs(prefix):
        prefix = os.path.join(str(folder), prefix)
    moved = os.path.join(str(folder), os.path.basename(prefix))
    if not _is_checkpoint(prefix) and _is_checkpoint(moved):
        prefix = moved  # an absolute path written where the folder used to be
    if not _is_checkpoint(prefix):
        raise BadFileError(f"{state_file}: names checkpoint {prefix}, which is missing (no "
                           f"{os.path.basename(prefix)}.index); delete the state file to use the "
                           "newest checkpoint in the folder", path=state_file)
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
            raise BadFileError(f"{path}: folder holds no checkpoint (no *.index file)", path=path)
        return latest
    if not os.path.exists(path + ".index"):
        if os.path.isfile(path):
            return path  # a V1 single-file checkpoint (the 2017 port's) has no .index
        raise BadFileError(f"{path}: no such checkpoint (expected {path}.index, a folder of "
                           "checkpoints, a .caffemodel, an .npz or a 2017-port .ckpt file)",
                           path=path)
    return path


def source_path(path):
    """The file actually read for `path`: the prefix a folder of checkpoints resolves to, else
    `path`."""
    if is_caffemodel(path) or _is_array_file(path):
        return str(path)
    return resolve(path)


def _reader(prefix):
    """TensorFlow's reader of the checkpoint at `prefix`: the one place a checkpoint is opened."""
    tf_bundle.check(prefix)  # what would abort TensorFlow's reader is refused first
    try:
        return tf.train.load_checkpoint(prefix)
    except READ_ERRORS as exc:
        raise BadFileError(f"{prefix}: not a readable checkpoint ({tensorflow_reason(exc)})",
                           path=prefix) from None


def _tensor(reader, prefix, key):
    """One tensor of a checkpoint; a truncated or corrupt `.data` file is a BadFileError."""
    try:
        return reader.get_tensor(key)
    except READ_ERRORS as exc:
        raise BadFileError(f"{prefix}: corrupt or truncated checkpoint data "
                           f"({tensorflow_reason(exc)[:200]})", path=prefix) from None


def corrupt(prefix, exc):
    """The BadFileError for a checkpoint that failed to restore with `exc`."""
    return BadFileError(f"{prefix}: corrupt or truncated checkpoint "
                        f"({tensorflow_reason(exc)[:200]})",
                        path=prefix)


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


def _is_array_file(path):
    """An `.npz` (read as weights) or a `.npy` (refused: the 2017 port's pickles)."""
    path = str(path)
    if path.endswith(".npy"):
        legacy.refuse_npy(path)
    return path.endswith(".npz")


def _read_npz(path):
    """{name: array} of an .npz (convert.py --data-output-path), never unpickling.

    Raises:
        BadFileError: missing or unreadable file, a member that is not an .npy array,
            two members of one name, or a header that does not fit the member.
    """
    return npz_file.read(path)


def _recorded(reader, prefix):
    """(variant, num_classes, class_names, class_colours) a checkpoint records
    (`weights.recorded_meta`), None when it records none."""
    if not reader.has_tensor(_META_KEY.format("model")):
        return None
    if not reader.has_tensor(_META_KEY.format("num_classes")):
        raise BadFileError(f"{prefix}: records meta/model but no meta/num_classes: corrupt "
                           "checkpoint?", path=prefix)
    names, colours = (_tensor(reader, prefix, _META_KEY.format(key))
                      if reader.has_tensor(_META_KEY.format(key)) else None
                      for key in ("class_names", "class_colours"))
    return weights.recorded_meta(prefix, _tensor(reader, prefix, _META_KEY.format("model")),
                                 _tensor(reader, prefix, _META_KEY.format("num_classes")), names,
                                 colours)


def _open_checkpoint(prefix):
    reader = _reader(prefix)
    shapes = reader.get_variable_to_shape_map()
    if legacy.is_port_checkpoint(shapes):
        keys, format = legacy.name_map(shapes), "2017-port checkpoint"
    else:
        keys = {_param_name(k): k for k in shapes if _is_param_key(k)}
        format = "checkpoint"
    tensors = {name: (tuple(shapes[key]), functools.partial(_tensor, reader, prefix, key))
               for name, key in keys.items()}
    return weights.opened(prefix, format, tensors, recorded=_recorded(reader, prefix))


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
    if is_caffemodel(path):
        return caffe.open_caffemodel(path, variant=variant, prototxt=prototxt)
    if _is_array_file(path):
        path = str(path)
        tensors = {name: (a.shape, functools.partial(np.asarray, a))
                   for name, a in _read_npz(path).items()}
        return weights.opened(path, "npz", tensors)
    return _open_checkpoint(resolve(path))


def describe(path, prototxt=None):
    """What a weights file is, without reading its tensors' values.

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


def param_names(path):
    """The caffe names of a weights file's parameters, without reading their values."""
    return list(open_weights(path).tensors)


def _is_param_key(key):
    """A model parameter's key (`params/<name>/...`), not an optimizer slot kept beside it."""
    return (key.startswith(_PARAM_PREFIX) and key.endswith(_PARAM_SUFFIX)
            and "/.OPTIMIZER_SLOT/" not in key)


def _param_name(key):
    return key[len(_PARAM_PREFIX): -len(_PARAM_SUFFIX)].replace(".S", "/")


def read_params(path):
    """Every parameter of a weights file (see `load_weights`) as {caffe name: numpy array}.

    Raises:
        BadFileError: an unreadable file, or a value that is not finite.
    """
    return open_weights(path).read_all()


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
    if variant is not None:
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


infer_meta = weights.infer_meta
fold_stem_bias = weights.fold_stem_bias


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
    opened = open_weights(path, prototxt=prototxt, variant=variant)
    return build_model(opened, variant, num_classes, new_head, prototxt, **model_kwargs)


def build_model(opened, variant=None, num_classes=None, new_head=False, prototxt=None,
                **model_kwargs):
    """A DeepLabResNet filled from an opened weights file (see `load_weights`).

    Args:
        opened: an `open_weights` result.
        variant, num_classes, new_head, prototxt, **model_kwargs: as for `load_weights`.
    """
    if new_head and num_classes is None:
        num_classes = defaults.NUM_CLASSES
    opened.require_head(new_head, prototxt)
    variant, num_classes = opened.settle(variant, num_classes, new_head=new_head)
    network = arch.architecture(variant or defaults.VARIANT,
                                num_classes or defaults.NUM_CLASSES)
    params = opened.params_for(network, new_head=new_head)
    # The variables start from the values read: only a new head is drawn at random.
    model = DeepLabResNet(network.variant, network.num_classes, initial_values=params,
                          **model_kwargs)
    model.mark_statistics_trained()
    return model
