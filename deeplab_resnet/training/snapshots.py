"""Training checkpoints: where they go, the finite-weights guard, resuming."""

import contextlib
import glob
import logging
import os
import shutil
import tempfile

import tensorflow as tf

from deeplab_resnet.weights import checkpoint as ckpt_lib
from deeplab_resnet.errors import SettingError, first_line
from deeplab_resnet.training import run_record

CHECKPOINT_NAME = "model.ckpt"
log = logging.getLogger(__name__)


@tf.function(autograph=False)
def all_finite(variables):
    """Whether no variable holds inf or nan: checked before every save."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])


def save(manager, model, step):
    """Saves a checkpoint unless the weights hold inf or nan; returns its path."""
    if not all_finite(list(model.params.values())):
        raise SettingError(f"weights became inf or nan by update {step}: training stopped; last "
                           f"checkpoint: {manager.latest_checkpoint or 'none'} "
                           "(a lower {learning_rate} may help)", "learning_rate")
    prefix = os.path.join(manager.directory, f"{CHECKPOINT_NAME}-{step}")
    # A failed write (disk full) leaves the previous checkpoints as they were.
    with ckpt_lib.writing(prefix, partial=(prefix + ".*", prefix + "_temp*")):
        return manager.save(checkpoint_number=step)


@contextlib.contextmanager
def save_dir(snapshot_dir, chief):
    """Where this process saves checkpoints: `snapshot_dir` on the chief.

    Every worker must save (saving may involve collective operations), so
    the others save to a temporary folder that is removed afterwards, as
    TensorFlow recommends for MultiWorkerMirroredStrategy.
    """
    if chief:
        remove_unfinished_saves(snapshot_dir)
        yield snapshot_dir
        return
    folder = tempfile.mkdtemp(prefix="deeplab-worker-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_unfinished_saves(snapshot_dir):
    """Removes what saves that never finished left in `snapshot_dir` (a process killed
    while TensorFlow wrote a checkpoint leaves its `model.ckpt-N_temp` folder)."""
    pattern = os.path.join(glob.escape(snapshot_dir), f"{CHECKPOINT_NAME}-*_temp")
    for leftover in sorted(glob.glob(pattern)):
        if os.path.isdir(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
            log.info(f"removed {leftover} (left by a save that did not finish)")


def resume(checkpoint, resumed, snapshot_dir):
    """Restores the checkpoint being resumed into `checkpoint`, after checking its values.

    Args:
        checkpoint: the run's `TrainState.restorable`.
        resumed: the newest checkpoint of `snapshot_dir`, opened (`checkpoint.open_weights`).
        snapshot_dir: the folder, for messages.
    Raises:
        BadFileError naming the tensor: a value that is not finite, or that training cannot
            have written (`WeightsFile.check_values`), refused before any update.
        SettingError: a checkpoint of another kind of training.
    """
    resumed.check_values()
    latest = resumed.path
    try:
        status = checkpoint.restore(latest)
    except ckpt_lib.READ_ERRORS as exc:
        raise ckpt_lib.corrupt(latest, exc) from None
    # The run record (meta/run) is read on its own (`run_record.read`), not restored here;
    # said before the check, so that a refused resume leaves no warning for the collector.
    status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as exc:
        raise SettingError(f"{{snapshot_dir}} {snapshot_dir}: {latest} was written by another "
                           f"kind of training ({first_line(exc)[:120]}): "
                           f"{run_record.ways_out(snapshot_dir, latest)}",
                           "snapshot_dir", "restore_from") from None
