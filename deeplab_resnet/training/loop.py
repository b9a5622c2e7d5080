"""The one training loop behind train.py, train_msc.py and fine_tune.py."""

import contextlib
import os
import sys
import time

import tensorflow as tf
from tqdm import tqdm

from deeplab_resnet import checkpoint as ckpt_lib
from deeplab_resnet import defaults, devices, distribute, precision
from deeplab_resnet.arch import HEAD_PREFIX, is_head_variable
from deeplab_resnet.errors import SettingError, Stopped
from deeplab_resnet.image_reader import ImageReader
from deeplab_resnet.model import DeepLabResNet
from deeplab_resnet.stop import StopRequests, signal_name
from deeplab_resnet.training import run_record, snapshots, summaries
from deeplab_resnet.training.losses import Objective
from deeplab_resnet.training.optim import Adam, CaffeSGD, poly_learning_rate, sgd_params
from deeplab_resnet.training.step import LossScale, Trainer
from deeplab_resnet.utils import writable_dir


def build_model(config, latest):
    """The model to train: shaped like the snapshot to resume, else `restore_from`, else new."""
    kwargs = {"train_bn": config.train_bn, "seed": config.random_seed,
              "bn_momentum": config.bn_momentum}
    if latest is not None:
        variant, classes = ckpt_lib.check_meta(latest, config.variant, config.num_classes)
        return DeepLabResNet(variant or defaults.VARIANT, classes or defaults.NUM_CLASSES,
                             **kwargs)
    if config.restore_from:
        snapshots.check_head(config.restore_from, config.new_head)
        return ckpt_lib.load_weights(config.restore_from, config.variant, config.num_classes,
                                     new_head=config.new_head, prototxt=config.prototxt,
                                     **kwargs)
    return DeepLabResNet(config.variant or defaults.VARIANT,
                         config.num_classes or defaults.NUM_CLASSES, **kwargs)


def _log(message):
    tqdm.write(message, file=sys.stderr)


# Settings that change the updates of a run, recorded in its checkpoints (`run_record`)
# under these keys (the training scripts' flag names); those a recipe does not use are
# left out.
_RUN_SETTINGS = {"input_size": "input_size", "learning_rate": "learning_rate",
                 "random_mirror": "random_mirror", "random_scale": "random_scale",
                 "scale_mode": "scale_mode", "random_seed": "random_seed",
                 "mixed_precision": "mixed_precision", "ignore_label": "ignore_label"}
_SGD_SETTINGS = {"momentum": "momentum", "power": "power", "weight_decay": "weight_decay"}
_BN_SETTINGS = {"is_training": "train_bn", "bn_momentum": "bn_momentum"}


def _run_settings(config, recipe):
    """The `run_record.new` settings: what changes the updates, the total, what is given."""
    keys = dict(_RUN_SETTINGS)
    if recipe.optimizer == "sgd":
        keys.update(_SGD_SETTINGS)
    if not recipe.head_only:
        keys.update(_BN_SETTINGS)
    if recipe.multi_scale:
        keys["scales"] = "scales"
    settings = {key: getattr(config, field) for key, field in keys.items()}
    given = config.restore_from is not None
    return dict(settings, num_steps=config.num_steps, model=config.variant,
                num_classes=config.num_classes,
                restore_from=os.path.abspath(config.restore_from) if given else None,
                not_restore_last=config.new_head if given else None)


def _weights_source(config, latest, step, record, name_of):
    """Where the weights come from, for the first lines of output."""
    if latest is not None:
        return f"resuming from {latest} (update {step} of {config.num_steps})"
    if config.restore_from is None:
        return f"random initialisation — no {name_of('restore_from')} given"
    path = config.restore_from
    if not ckpt_lib.is_caffemodel(path):
        path = ckpt_lib.resolve(path)
    new_head = (f"; new head ({HEAD_PREFIX}_*) with {record['num_classes']} classes"
                if config.new_head else "")
    return f"{path}{new_head}"


def _field_name(field):
    return field


def train(config, recipe, on_save=None, name_of=_field_name):
    """Trains (or resumes training) as `config` says; returns the exit status.

    Args:
        config: a `TrainConfig`.
        recipe: the calling script's `Recipe`.
        on_save: called as on_save(model, update, path) after each checkpoint
            this process saves (every worker saves; only the chief's stay).
        name_of: how progress messages name a setting (the command line
            passes its flag names; errors name fields through `SettingError`).
    """
    strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and config.jit and not tf.config.list_logical_devices("GPU"):
        raise SettingError(f"{{jit}} with {replicas} replicas needs GPUs: XLA cannot compile "
                           "the cross-replica sums on CPU", "jit")
    devices.check_jit_determinism(config.jit, config.deterministic)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(config.random_seed)
    snapshot_dir = writable_dir(config.snapshot_dir, "snapshot_dir")
    reader = ImageReader(config.data_dir, config.data_list, config.input_size,
                         random_scale=config.random_scale, random_mirror=config.random_mirror,
                         ignore_label=config.ignore_label, seed=config.random_seed,
                         scale_mode=config.scale_mode)
    micro = config.grad_update_every
    wanted = run_record.new(recipe.name, config.data_list, config.data_dir, len(reader),
                            config.batch_size, replicas, micro, _run_settings(config, recipe))
    latest = ckpt_lib.latest_in(snapshot_dir)
    record, notes = wanted, []
    if latest is not None:
        try:
            record, notes = run_record.check_resume(latest, snapshot_dir, wanted, name_of)
        except ckpt_lib.READ_ERRORS as exc:
            raise ckpt_lib.corrupt(latest, exc) from None
    elif recipe.head_only and config.restore_from is None and not config.from_scratch:
        raise SettingError(f"{recipe.name} trains only the head: without {{restore_from}} the "
                           "backbone would be random; give {restore_from} (a trained or "
                           "converted checkpoint, or a .caffemodel), or {from_scratch} to do it "
                           "anyway", "restore_from", "from_scratch")
    model = build_model(config, latest)
    record = dict(record, model=model.variant, num_classes=model.num_classes)
    distribute.replicate(strategy, model.params)
    distribute.replicate(strategy, model.meta)
    variables = {k: v for k, v in model.params.items()
                 if v.trainable and (is_head_variable(k) or not recipe.head_only)}
    with strategy.scope():
        if recipe.optimizer == "sgd":
            params = {k: p for k, p in sgd_params(model).items() if k in variables}
            optimizer = CaffeSGD(params, config.momentum, config.weight_decay)
        else:
            optimizer = Adam(variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        position = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_position")
        loss_scale = LossScale() if config.mixed_precision == "fp16" else None
    # Checkpoints without --mixed-precision fp16 keep the layout they always had.
    scaling = {} if loss_scale is None else {"loss_scale": loss_scale}
    state = dict(params=model.params, optimizer=optimizer, step=step, data_position=position,
                 **scaling)
    # Saved with the run record (`meta/run`); restored without it, which also
    # resumes checkpoints written before records existed.
    checkpoint = tf.train.Checkpoint(meta={**model.meta, "run": run_record.variable(record)},
                                     **state)

    def log(message):
        if chief:
            _log(message)

    if latest is not None:
        snapshots.resume(tf.train.Checkpoint(meta=model.meta, **state), latest, snapshot_dir)
    start = int(step.numpy())
    for note in notes:
        log(note)
    if chief:  # what this run is, on stdout; progress, notices and errors go to stderr
        stop = ("" if config.stop_after is None
                else f", stopping after {config.stop_after} more")
        source = _weights_source(config, latest, start, record, name_of)
        print(f"{recipe.name}: weights: {source}\n"
              f"{recipe.name}: model: {model.variant}, {model.num_classes} classes; data: "
              f"{len(reader)} images ({config.data_list})\n"
              f"{recipe.name}: batch: {config.batch_size} per replica x {replicas} replica(s) x "
              f"{micro} mini-batch(es) = {config.batch_size * replicas * micro} images per "
              f"update; updates: {start} done of {config.num_steps}{stop}\n"
              f"{recipe.name}: checkpoints: {snapshot_dir} (every {config.save_pred_every} "
              f"updates, the last {config.keep_checkpoints} kept)", flush=True)
    if start >= config.num_steps:
        num_steps = name_of("num_steps")
        log(f"{snapshot_dir}: already trained for {start} of {num_steps} {config.num_steps} "
            f"updates: nothing to do (a larger {num_steps} continues this run)")
        return 0
    end = config.num_steps if config.stop_after is None else min(config.num_steps,
                                                              start + config.stop_after)
    objective = Objective(model, config.ignore_label,
                          scales=config.scales if recipe.multi_scale else None,
                          compute_dtype=precision.training_dtype(config.mixed_precision))
    trainer = Trainer(objective, optimizer, variables, jit=config.jit, strategy=strategy,
                      loss_scale=loss_scale)
    # Created after the first good update: bad data or a diverging first step
    # leaves no event file behind.
    writer = None

    def learning_rate(update):
        if recipe.optimizer == "sgd":
            return poly_learning_rate(config.learning_rate, update, config.num_steps, config.power)
        return config.learning_rate

    batches = reader.batches(config.batch_size, micro, start=int(position.numpy()),
                             strategy=strategy, num_classes=model.num_classes)
    with contextlib.closing(batches), snapshots.save_dir(snapshot_dir, chief) as save_dir, \
            StopRequests(strategy) as stop_requests, \
            tqdm(total=config.num_steps, initial=start, unit="step", dynamic_ncols=True,
                 desc=recipe.name, disable=not (chief and sys.stderr.isatty())) as bar:
        manager = tf.train.CheckpointManager(checkpoint, save_dir,
                                             max_to_keep=config.keep_checkpoints,
                                             checkpoint_name=snapshots.CHECKPOINT_NAME)
        started = time.perf_counter()
        saved_at = None
        for images, labels in batches:
            update = int(step.numpy())
            lr = learning_rate(update)
            loss, accuracy, finite = trainer.step(images, labels, lr)
            if not finite:
                if writer is not None:
                    writer.flush()
                raise SettingError(f"loss became {loss} at update {update + 1}: training stopped "
                                   f"without applying it; last checkpoint: "
                                   f"{manager.latest_checkpoint or 'none'} "
                                   "(a lower {learning_rate} may help)", "learning_rate")
            step.assign_add(1)
            position.assign_add(micro * config.batch_size * replicas)
            done = update + 1
            if writer is None:
                writer = (tf.summary.create_file_writer(snapshot_dir) if chief
                          else tf.summary.create_noop_writer())
            with writer.as_default():
                summaries.write_scalar("loss", loss, done)
                summaries.write_scalar("learning_rate", lr, done)
                summaries.write_scalar("pixel_accuracy", accuracy, done)
                if loss_scale is not None:
                    summaries.write_scalar("loss_scale", float(loss_scale.scale.numpy()), done)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", refresh=False)
            bar.update(1)
            if done % config.save_pred_every == 0 or done == end:
                if chief and config.save_num_images:
                    with writer.as_default():
                        summaries.write_image_summary(trainer, images, labels,
                                                      config.save_num_images, done,
                                                      config.ignore_label)
                saved = snapshots.save(manager, model, done)
                saved_at = done
                if on_save is not None:
                    on_save(model, done, saved)
                if chief and bar.disable:  # no progress bar: one line per checkpoint instead
                    rate = (done - start) / max(time.perf_counter() - started, 1e-9)
                    _log(f"update {done}/{config.num_steps}: loss {loss:.4f}, pixel accuracy "
                         f"{accuracy:.3f}, {rate:.2f} updates/s, "
                         f"ETA {(config.num_steps - done) / rate / 60:.1f} min; saved {saved}")
            if done >= end:
                break
            signum = stop_requests.poll()
            if signum is not None:
                if saved_at != done:
                    saved = snapshots.save(manager, model, done)
                    if on_save is not None:
                        on_save(model, done, saved)
                if writer is not None:
                    writer.flush()
                distribute.barrier(strategy)
                raise Stopped(f"{signal_name(signum)}: stopped after update {done} of "
                              f"{config.num_steps}, checkpoint saved in {snapshot_dir}; rerun the "
                              "same command to resume", 128 + signum)
    if writer is not None:
        writer.flush()
    distribute.barrier(strategy)
    if int(step.numpy()) < config.num_steps:
        log(f"stopped at update {int(step.numpy())} of {config.num_steps}: "
            f"{manager.latest_checkpoint}; rerun the same command to go on")
    else:
        log(f"finished: {manager.latest_checkpoint}")
    return 0
