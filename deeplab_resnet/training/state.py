"""What a training run updates and saves: the model, the optimizer, the counters, the checkpoint."""

import dataclasses

import numpy as np
import tensorflow as tf

from deeplab_resnet.data.classes import palette_of
from deeplab_resnet.weights import checkpoint as ckpt_lib
from deeplab_resnet import defaults
from deeplab_resnet.model import arch
from deeplab_resnet.runtime import distribute
from deeplab_resnet.model.arch import is_head_variable
from deeplab_resnet.errors import SettingError
from deeplab_resnet.model.network import DeepLabResNet
from deeplab_resnet.training import class_weights, run_record
from deeplab_resnet.training.optim import Adam, CaffeSGD, sgd_params
from deeplab_resnet.training.step import LossScale


def build_model(config, latest):
    """The model to train: shaped like the snapshot to resume, else `restore_from`, else new.

    Args:
        config: a `TrainConfig`.
        latest: the checkpoint prefix being resumed, or None.
    """
    kwargs = {"train_bn": config.train_bn, "seed": config.random_seed,
              "bn_momentum": config.bn_momentum}
    if latest is not None:
        variant, classes = ckpt_lib.check_meta(latest, config.variant, config.num_classes)
        network = arch.architecture(variant or defaults.VARIANT,
                                    classes or defaults.NUM_CLASSES)
        # Resuming restores every variable (`snapshots.resume` refuses a snapshot that
        # leaves one out), so the model starts from zeros instead of random draws.
        zeros = {name: np.zeros(shape, np.float32)
                 for name, shape in network.param_shapes().items()}
        return DeepLabResNet(network.variant, network.num_classes, initial_values=zeros,
                             **kwargs)
    if config.restore_from:
        # Weights without the DeepLab head need `new_head`: `load_weights` says so.
        try:
            return ckpt_lib.load_weights(config.restore_from, config.variant,
                                         config.num_classes, new_head=config.new_head,
                                         prototxt=config.prototxt, **kwargs)
        except SettingError as exc:
            if exc.field != "num_classes" or config.new_head:
                raise
            raise SettingError(f"{exc.template}; add {{new_head}} to train a new head with "
                               f"{config.num_classes} classes on its backbone",
                               *exc.fields, "new_head", path=exc.path) from None
    return DeepLabResNet(config.variant or defaults.VARIANT,
                         config.num_classes or defaults.NUM_CLASSES, **kwargs)


@dataclasses.dataclass
class TrainState:
    """Everything an update changes, created under the run's strategy.

    Attributes:
        model: the `DeepLabResNet`.
        variables: {name: variable} the optimizer trains.
        optimizer: `CaffeSGD` or `Adam`.
        step: updates done (int64 variable).
        position: examples of the input stream consumed (int64 variable).
        loss_scale: the `LossScale` of float16 training, else None.
        checkpoint: what is saved: all of the above and the run record (`meta/run`).
        restorable: the same without the record, for resuming (which also
            resumes checkpoints written before records existed).
        palette: 256x3 uint8 colours of the classes the run records (a classes file's,
            given or resumed), None for VOC's: the summaries' label colours.
        class_weights: the loss weight of each class, or None (`class_weights.resolve`).
    """
    model: object
    variables: dict
    optimizer: object
    step: tf.Variable
    position: tf.Variable
    loss_scale: object
    checkpoint: tf.train.Checkpoint
    restorable: tf.train.Checkpoint
    palette: object = None
    class_weights: tuple | None = None


def build_state(config, recipe, strategy, latest, record):
    """The `TrainState` of a run (resume it with `snapshots.resume(state.restorable, ...)`).

    Args:
        config: the `TrainConfig`.
        recipe: the `Recipe` (optimizer, head only).
        strategy: the run's tf.distribute strategy.
        latest: the checkpoint prefix being resumed, or None.
        record: the run record to save, completed here with the model's variant and classes.
    """
    model = build_model(config, latest)
    record = dict(record, model=model.variant, num_classes=model.num_classes)
    class_names = record.get("class_names")  # given, else those the resumed run recorded
    ckpt_lib.check_class_names(class_names, model.num_classes)
    record, weights = class_weights.resolve(config, record, model.num_classes)
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
        loss_scale = LossScale() if config.precision == "fp16" else None
    # Checkpoints of runs without float16 keep the layout they always had.
    scaling = {} if loss_scale is None else {"loss_scale": loss_scale}
    saved = dict(params=model.params, optimizer=optimizer, step=step, data_position=position,
                 **scaling)
    meta = {**model.meta,
            **ckpt_lib.class_names_meta(class_names, record.get("class_colours")),
            "run": run_record.variable(record)}
    colours = record.get("class_colours")
    return TrainState(model, variables, optimizer, step, position, loss_scale,
                      tf.train.Checkpoint(meta=meta, **saved),
                      tf.train.Checkpoint(meta=model.meta, **saved),
                      palette=None if colours is None else palette_of(colours),
                      class_weights=weights)
