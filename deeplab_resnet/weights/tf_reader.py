"""The one reader of TensorFlow checkpoints: a prefix opened into the parts of a `WeightsFile`.

`open_checkpoint(prefix)` opens a checkpoint that `tf_bundle.check` has passed (what would
abort TensorFlow's reader is refused there; `checkpoint.open_weights`, its one caller, runs
both) with `tf.train.load_checkpoint` (called here only, in `_reader`) and names the
tensors in the model's scheme: `params/<name>` of
this project's checkpoints, or the 2017 port's names (`legacy`). The other tensors of a
training checkpoint (counters, optimizer slots, the run record) are kept by key, for
resuming. Values are read only when asked for.
"""

import functools

import tensorflow as tf

from deeplab_resnet.errors import BadFileError, tensorflow_reason
from deeplab_resnet.weights import legacy
from deeplab_resnet.weights.paths import READ_ERRORS

_META_KEY = "meta/{}/.ATTRIBUTES/VARIABLE_VALUE"
_PARAM_PREFIX = "params/"
_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# The object graph TensorFlow keeps beside the values: no tensor of the run's.
_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


def corrupt(prefix, exc):
    """The BadFileError for a checkpoint that failed to read or restore with `exc`."""
    return BadFileError(f"{prefix}: corrupt or truncated checkpoint "
                        f"({tensorflow_reason(exc)[:200]})", path=prefix)


def _reader(prefix):
    """TensorFlow's reader of the checkpoint at `prefix` (checked by `tf_bundle.check`): the
    one place a checkpoint is opened."""
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


def _recorded(reader, prefix):
    """(variant, num_classes, class_names, class_colours) as a checkpoint stores them
    (`meta/*`), unchecked; None when it records none."""
    if not reader.has_tensor(_META_KEY.format("model")):
        return None
    if not reader.has_tensor(_META_KEY.format("num_classes")):
        raise BadFileError(f"{prefix}: records meta/model but no meta/num_classes: corrupt "
                           "checkpoint?", path=prefix)
    names, colours = (_tensor(reader, prefix, _META_KEY.format(key))
                      if reader.has_tensor(_META_KEY.format(key)) else None
                      for key in ("class_names", "class_colours"))
    return (_tensor(reader, prefix, _META_KEY.format("model")),
            _tensor(reader, prefix, _META_KEY.format("num_classes")), names, colours)


def _is_param_key(key):
    """A model parameter's key (`params/<name>/...`), not an optimizer slot kept beside it."""
    return (key.startswith(_PARAM_PREFIX) and key.endswith(_VALUE_SUFFIX)
            and "/.OPTIMIZER_SLOT/" not in key)


def _param_name(key):
    return key[len(_PARAM_PREFIX): -len(_VALUE_SUFFIX)].replace(".S", "/")


def state_name(key):
    """How a tensor of a training checkpoint is named in messages: its key without
    TensorFlow's suffix, e.g. `optimizer/velocity/conv1/weights`."""
    return key.removesuffix(_VALUE_SUFFIX).replace(".S", "/")


def open_checkpoint(prefix):
    """The parts of a `WeightsFile` (keyword arguments of `weights_file.opened`) for the
    checkpoint at `prefix`, opened once; `tf_bundle.check(prefix)` must have passed.

    Returns:
        {"format", "tensors": {name: (shape, read)}, "others": {`state_name`: (shape, read)},
        "recorded": as stored, or None}.
    Raises:
        BadFileError: files that TensorFlow's reader cannot read.
    """
    reader = _reader(prefix)
    shapes = reader.get_variable_to_shape_map()
    if legacy.is_port_checkpoint(shapes):
        keys, format = legacy.name_map(shapes), "2017-port checkpoint"
    else:
        keys = {_param_name(k): k for k in shapes if _is_param_key(k)}
        format = "checkpoint"

    def parts(names):
        return {name: (tuple(shapes[key]), functools.partial(_tensor, reader, prefix, key))
                for name, key in names.items()}
    taken = set(keys.values()) | {_OBJECT_GRAPH}
    return {"format": format, "tensors": parts(keys),
            "others": parts({state_name(key): key for key in shapes if key not in taken}),
            "recorded": _recorded(reader, prefix)}
