"""Where a weights path points: its kind and the file actually read, decided once.

`locate(path)` is the one place a path given as weights is resolved: a `.caffemodel`,
an `.npz`, a `.npy` (the 2017 port's pickles, refused by `legacy`), or a TensorFlow
checkpoint given as a prefix, a `.index` file, a folder of checkpoints (its newest,
`latest_in`) or the 2017 port's V1 single file. Nothing is opened here but a folder's
`checkpoint` state file.
"""

import contextlib
import os

import tensorflow as tf

from deeplab_resnet.errors import BadFileError

# What a failed read of a checkpoint raises: TensorFlow's errors, and IndexError
# for a `.data` file shorter than its index says.
READ_ERRORS = (tf.errors.OpError, IndexError, ValueError)

CAFFEMODEL, NPZ, NPY, CHECKPOINT = "caffemodel", "npz", "npy", "checkpoint"


def kind_of(path):
    """The kind of weights file `path` names by its name: CAFFEMODEL, NPZ, NPY or CHECKPOINT."""
    path = str(path)
    for kind, suffix in ((CAFFEMODEL, ".caffemodel"), (NPZ, ".npz"), (NPY, ".npy")):
        if path.endswith(suffix):
            return kind
    return CHECKPOINT


def locate(path):
    """(kind, the file to read) for a path given as weights; see the module's docstring.

    Raises:
        BadFileError: a checkpoint that is not there, or a folder that holds none.
    """
    kind = kind_of(path)
    return kind, (resolve(path) if kind == CHECKPOINT else str(path))


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
    return locate(path)[1]
