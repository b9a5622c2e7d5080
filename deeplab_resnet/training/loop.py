"""`train`: the one training loop behind train.py, train_msc.py and fine_tune.py, as a function."""

import contextlib
import dataclasses
import logging
import os
import time

import tensorflow as tf

from deeplab_resnet.weights import checkpoint as ckpt_lib
from deeplab_resnet import defaults
from deeplab_resnet.runtime import devices
from deeplab_resnet.runtime import distribute
from deeplab_resnet.runtime import precision
from deeplab_resnet.model.arch import HEAD_PREFIX
from deeplab_resnet.errors import NamingSettings, SettingError, counted, progress_line
from deeplab_resnet.data.pipeline import ImageReader
from deeplab_resnet.runtime.stop import StopAgreement, StopRequest
from deeplab_resnet.training.callbacks import Callback, TrainResult  # noqa: F401 (API)
from deeplab_resnet.training import (folder_lock, memory, run_record, snapshots, summaries,
                                     validation)
from deeplab_resnet.training.config import get_recipe
from deeplab_resnet.training.losses import Objective
from deeplab_resnet.training.optim import poly_learning_rate
from deeplab_resnet.training.readback import Readback, SkipCount, check
from deeplab_resnet.training.state import build_state, has_initial_statistics, starting_weights
from deeplab_resnet.training.step import Trainer
from deeplab_resnet.files import writable_dir

log = logging.getLogger(__name__)
PROGRESS = {"progress": True}  # `extra` of records that are progress, not the report


def train(config, recipe="train", *, callbacks=(), stop=None, strategy=None):
    """Trains (or resumes training) as `config` says, in `config.snapshot_dir`.

    A rerun with the same settings resumes the run from its latest checkpoint
    exactly (`run_record` says what may change). The report (what is trained,
    from which weights, where checkpoints go) is logged at INFO, progress and
    notices with `extra={"progress": True}`, through `logging.getLogger(__name__)`;
    nothing is printed. Only `config.tf32` (TF32 off unless True, as the commands) and
    `config.deterministic` change process-wide state.

    Args:
        config: a `TrainConfig`.
        recipe: "train" (Caffe SGD, poly rate), "train_msc" (multi-scale loss)
            or "fine_tune" (Adam, head only), or a `Recipe`.
        callbacks: `Callback`s told of every update and checkpoint.
        stop: a `StopRequest`; once requested, training saves a checkpoint after
            the update in progress and returns with `stopped_early`.
        strategy: the tf.distribute strategy of `config.strategy`, if already made
            (`distribute.make_strategy`; default: made here). A multi-worker strategy
            takes SIGTERM for TensorFlow's preemption notifier when it is made: install
            a SIGTERM handler that sets `stop` after making it, as the commands do.
    Returns:
        a `TrainResult`.
    Raises:
        SettingError, BadFileError: bad settings, data or weights (nothing is trained);
            a loss or weights that became inf or nan (the last good checkpoint stays);
            a `snapshot_dir` another run holds (`folder_lock`: one run per folder, held
            for the whole call, by the chief in a multi-worker run).
        WriteError: a checkpoint could not be written.

    Example:
        >>> config = TrainConfig(data_dir="data", data_list="data/train.txt", variant="tiny",
        ...                      num_classes=4, batch_size=2, input_size=(65, 65),
        ...                      num_steps=10, snapshot_dir="snap")
        >>> result = train(config)  # doctest: +SKIP
        >>> result.updates, result.checkpoint  # doctest: +SKIP
        (10, 'snap/model.ckpt-10')
    """
    recipe = get_recipe(recipe)
    devices.use_tf32(config.tf32)
    strategy = strategy or distribute.make_strategy(config.strategy)
    with folder_lock.holding(config.snapshot_dir, lock=distribute.is_chief(strategy)):
        return _train(config, recipe, strategy, callbacks, stop)


def _train(config, recipe, strategy, callbacks, stop):
    """`train` in its snapshot folder, once the folder is this run's."""
    run = _start(config, recipe, strategy)
    if run.start >= config.num_steps:
        if run.chief:
            _log(logging.INFO, f"{run.snapshot_dir}: already trained for {run.start} of "
                 f"{{num_steps}} {config.num_steps} updates: nothing to do (a larger "
                 "{num_steps} continues this run)", "num_steps", progress=True)
            validation.for_run(run).catch_up(run.start, run.latest)  # saved, maybe not scored
        for callback in callbacks:
            callback.on_train_end()
        return TrainResult(run.latest, run.start, None)
    return _Loop(run, tuple(callbacks), stop or StopRequest()).train()


def _log(level, template, *fields, progress=False):
    """Logs `template` naming the settings `fields` (`NamingSettings`)."""
    log.log(level, NamingSettings(template, *fields), extra=PROGRESS if progress else None)


@dataclasses.dataclass
class _Run:
    """A run ready to train: its settings, the input, the state restored, where it saves."""
    config: object
    recipe: object
    strategy: object
    chief: bool
    snapshot_dir: str
    reader: ImageReader
    state: object
    latest: str | None
    start: int
    weights: object  # the opened `WeightsFile` the model started from, None: new
    notes: list = dataclasses.field(default_factory=list)
    random_statistics: bool = False
    compute_dtype: object = tf.float32  # what `config.precision` runs as here


def _start(config, recipe, strategy):
    """Checks what the run is against its snapshot folder, builds and restores its state, and
    logs the startup report."""
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and config.jit and not tf.config.list_logical_devices("GPU"):
        raise SettingError(f"{{jit}} with {replicas} replicas needs GPUs: XLA cannot compile "
                           "the cross-replica sums on CPU", "jit")
    devices.check_jit_determinism(config.jit, config.deterministic)
    if config.deterministic:
        # No global seed is needed: nothing in training draws from it (the data and the
        # initial weights are stateless functions of `random_seed`).
        tf.config.experimental.enable_op_determinism()
    snapshot_dir = writable_dir(config.snapshot_dir, "snapshot_dir")
    reader = ImageReader(config.data_dir, config.data_list, config.input_size,
                         random_scale=config.random_scale, random_mirror=config.random_mirror,
                         ignore_label=config.ignore_label, seed=config.random_seed,
                         scale_mode=config.scale_mode)
    wanted = run_record.new(recipe.name, config.data_list, config.data_dir, len(reader),
                            config.batch_size, replicas, config.grad_update_every,
                            run_record.settings_of(config, recipe))
    latest = ckpt_lib.latest_in(snapshot_dir)
    # The checkpoint resumed is opened once; the run record, the model and the restore take it.
    resumed = ckpt_lib.open_weights(latest) if latest is not None else None
    record, notes = wanted, []
    if resumed is not None:
        record, notes = run_record.check_resume(resumed, snapshot_dir, wanted)
    elif recipe.head_only and config.restore_from is None and not config.from_scratch:
        raise SettingError(f"{recipe.name} trains only the head: without {{restore_from}} the "
                           "backbone would be random; give {restore_from} (a trained or "
                           "converted checkpoint, or a .caffemodel), or {from_scratch} to do it "
                           "anyway", "restore_from", "from_scratch")
    start = starting_weights(config, resumed)
    # Decided once, after any fallback to fp32: the network and the loss scaling follow it.
    compute_dtype = precision.resolve(config.precision)
    state = build_state(config, recipe, strategy, resumed, record, start, compute_dtype)
    memory.check(config, state.model.variant, state.model.num_classes,
                 on_gpu=bool(tf.config.list_logical_devices("GPU")))
    if resumed is not None:
        snapshots.resume(state.restorable, resumed, snapshot_dir)
    run = _Run(config, recipe, strategy, distribute.is_chief(strategy), snapshot_dir, reader,
               state, latest, int(state.step.numpy()), start, notes,
               random_statistics=(not config.train_bn and not recipe.head_only
                                  and has_initial_statistics(state.model)),
               compute_dtype=compute_dtype)
    if run.chief:
        _log_report(run)
        memory.warn_if_larger_than_the_list(config, len(reader))
    return run


# Said where random BatchNorm statistics are frozen (`_Run.random_statistics`).
_FROZEN_RANDOM_BN = ("BatchNorm is frozen on random statistics, which rarely trains (the loss "
                     "usually diverges): add {train_bn} to train it")


def _classes_source(config, model):
    """Where the head's class count came from, for the report."""
    if config.num_classes is not None:
        return "given"
    if config.restore_from is None or config.new_head:
        return (f"the default {defaults.NUM_CLASSES}: give {{num_classes}} for your data's "
                "count")
    return "the starting weights'"


def _log_report(run):
    """The first lines of a run (INFO): weights, model and data, batch and updates, checkpoints."""
    config, name, model = run.config, run.recipe.name, run.state.model
    replicas, micro = run.strategy.num_replicas_in_sync, config.grad_update_every
    if run.latest is not None:
        source = f"resuming from {run.latest} (update {run.start} of {config.num_steps})"
    elif config.restore_from is None:
        source = "random initialisation — no {restore_from} given"
    else:
        source = run.weights.path + (f"; new head ({HEAD_PREFIX}_*) with {model.num_classes} "
                                     "classes" if config.new_head else "")
    if run.random_statistics and run.latest is None:
        source += f"; {_FROZEN_RANDOM_BN}"
    _log(logging.INFO, f"{name}: weights: {source}",
         *(field for field in ("restore_from", "train_bn") if f"{{{field}}}" in source))
    stop = "" if config.stop_after is None else f", stopping after {config.stop_after} more"
    classes = ("from the checkpoint resumed" if run.latest is not None
               else _classes_source(config, model))
    _log(logging.INFO, f"{name}: model: {model.variant}, {model.num_classes} classes "
         f"({classes}); data: {counted(len(run.reader), 'image')} ({config.data_list})",
         *(("num_classes",) if "{num_classes}" in classes else ()))
    log.info(f"{name}: batch: {config.batch_size} per replica x {counted(replicas, 'replica')} x "
             f"{counted(micro, 'mini-batch', 'mini-batches')} = "
             f"{counted(config.batch_size * replicas * micro, 'image')} per update; updates: "
             f"{run.start} done of {config.num_steps}{stop}")
    log.info(f"{name}: checkpoints: {run.snapshot_dir} (every {config.save_pred_every} "
             f"updates, the last {config.keep_checkpoints} kept)")


class _Loop:
    """The updates of one `train` call, from `run.start` to the end, a stop or an error."""

    def __init__(self, run, callbacks, stop):
        self.run = run
        self.config = config = run.config
        self.callbacks = callbacks
        self.stop = stop
        self.end = (config.num_steps if config.stop_after is None
                    else min(config.num_steps, run.start + config.stop_after))
        self.update = run.start
        self.saved_at = None
        self.last_loss = self.last_accuracy = None
        self.manager = None
        self.started = None  # when the first update of this call began
        # Created after the first good update: bad data or a diverging first step
        # leaves no event file behind.
        self.writer = None
        objective = Objective(run.state.model, config.ignore_label,
                              scales=config.scales if run.recipe.multi_scale else None,
                              compute_dtype=run.compute_dtype,
                              class_weights=run.state.class_weights,
                              ohem_fraction=config.ohem_fraction)
        self.validation = validation.for_run(run)
        self.trainer = Trainer(objective, run.state.optimizer, run.state.variables,
                               jit=config.jit, strategy=run.strategy,
                               loss_scale=run.state.loss_scale)
        self.readback = Readback(config.log_every, self._told)
        self.skips = SkipCount(config.max_skipped_updates)

    def train(self):
        """Updates until the end or a stop; returns the `TrainResult`."""
        run, config = self.run, self.config
        batches = run.reader.batches(config.batch_size, config.grad_update_every,
                                     start=int(run.state.position.numpy()),
                                     strategy=run.strategy, num_classes=run.state.model.num_classes)
        agreement = StopAgreement(self.stop, run.strategy)
        with contextlib.closing(batches), self._flushing_summaries(), \
                snapshots.save_dir(run.snapshot_dir, run.chief) as save_dir:
            self.manager = tf.train.CheckpointManager(
                run.state.checkpoint, save_dir, max_to_keep=config.keep_checkpoints,
                checkpoint_name=snapshots.CHECKPOINT_NAME)
            self.writer = self.validation.catch_up(run.start, run.latest, self.writer)
            self.started = time.perf_counter()
            while self.update < self.end:
                if self._poll_due(agreement) and agreement.poll():
                    self.readback.read()
                    return self._stopped()
                images, labels = next(batches)
                self._one_update(images, labels)
                if self.update % config.save_pred_every == 0 or self.update == self.end \
                        or validation.due(config, self.update):
                    self.readback.read()
                    self.validation.run(self.update, self._checkpoint(images, labels), self.writer)
            self.readback.read()
            return self._finished()

    def _poll_due(self, agreement):
        """Whether to poll for a stop now: every update in one process (a flag); across
        workers (a collective, a host read) every `log_every`, the same on every worker."""
        return (not agreement.across_workers
                or (self.update - self.run.start) % self.config.log_every == 0)

    @contextlib.contextmanager
    def _flushing_summaries(self):
        """The summaries written so far reach the disk however the run ends."""
        try:
            yield
        finally:
            if self.writer is not None:
                self.writer.flush()

    def _learning_rate(self):
        if self.run.recipe.optimizer == "sgd":
            return poly_learning_rate(self.config.learning_rate, self.update,
                                      self.config.num_steps, self.config.power)
        return self.config.learning_rate

    def _one_update(self, images, labels):
        """Dispatches one update, read back later with others (`Readback`)."""
        state, learning_rate = self.run.state, self._learning_rate()
        stats = self.trainer.step(images, labels, learning_rate)
        state.step.assign_add(1)
        state.position.assign_add(self.config.grad_update_every * self.config.batch_size
                                  * self.run.strategy.num_replicas_in_sync)
        self.update += 1
        self.readback.add(self.update, learning_rate, stats)

    def _told(self, update):
        """An update read back (a `readback.Update`): its checks, summaries and callbacks."""
        stats, number = update.stats, update.number
        hint = ("(a lower {learning_rate} may help)" if not self.run.random_statistics
                else f"({_FROZEN_RANDOM_BN}; or a lower {{learning_rate}})")
        check(update, self.skips, self.manager.latest_checkpoint or "none", hint)
        self.last_loss, self.last_accuracy = stats.loss, stats.accuracy
        if self.writer is None:
            self.writer = (tf.summary.create_file_writer(self.run.snapshot_dir)
                           if self.run.chief else tf.summary.create_noop_writer())
        with self.writer.as_default():
            summaries.write_update(number, update.learning_rate, stats)
        if number == self.run.start + 1 and self.run.chief:
            # Told once an update worked: a run that fails to resume shows only its error.
            for level, template, fields in self.run.notes:
                _log(level, template, *fields, progress=True)
        for callback in self.callbacks:
            callback.on_update(number, stats.loss, update.learning_rate)

    def _checkpoint(self, images, labels):
        """The image summary and a checkpoint of the update just made, and a progress line."""
        config, done = self.config, self.update
        if self.run.chief and config.save_num_images:
            with self.writer.as_default():
                summaries.write_image_summary(self.trainer, images, labels,
                                              config.save_num_images, done, config.ignore_label,
                                              self.run.state.palette)
        saved = self._save()
        if self.run.chief:
            rate = (done - self.run.start) / max(time.perf_counter() - self.started, 1e-9)
            per_update = (config.batch_size * config.grad_update_every
                          * self.run.strategy.num_replicas_in_sync)
            line = progress_line(self.run.recipe.name, "update", done, config.num_steps,
                                 [f"loss {self.last_loss:.4f}",
                                  f"pixel accuracy {self.last_accuracy:.3f}"],
                                 rate * per_update, (config.num_steps - done) / rate)
            log.info(f"{line}; saved {saved}", extra=PROGRESS)
        return saved

    def _save(self):
        """Saves a checkpoint of the current update; tells the callbacks; returns its prefix."""
        saved = snapshots.save(self.manager, self.run.state.model, self.update)
        self.saved_at = self.update
        for callback in self.callbacks:
            callback.on_checkpoint(self.update, saved)
        return saved

    def _result(self, **stopped):
        """The `TrainResult`, once every worker is done (the chief hosts the cluster's
        coordination service: it must not leave while others still talk to it)."""
        for callback in self.callbacks:
            callback.on_train_end()
        distribute.barrier(self.run.strategy)
        latest = self.manager.latest_checkpoint or self.run.latest
        if latest is not None:  # the chief's copy: other workers save to a temporary folder
            latest = os.path.join(self.run.snapshot_dir, os.path.basename(latest))
        return TrainResult(latest, self.update, self.last_loss, **stopped)

    def _stopped(self):
        if self.saved_at != self.update and self.update > self.run.start:
            self._save()
        return self._result(stopped_early=True, stop_reason=self.stop.reason)

    def _finished(self):
        result = self._result()
        if self.run.chief and self.update < self.config.num_steps:
            log.info(f"stopped at update {self.update} of {self.config.num_steps}: "
                     f"{result.checkpoint}; train again with the same settings to go on",
                     extra=PROGRESS)
        elif self.run.chief:
            log.info(f"finished: {result.checkpoint}", extra=PROGRESS)
        return result
