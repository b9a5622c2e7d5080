"""What a training run is told: `TrainConfig` (the settings) and `Recipe` (what a script changes).

This module imports no TensorFlow, but the package `deeplab_resnet.training`
that holds it imports the loop, and so TensorFlow.
"""

import dataclasses
import os

from deeplab_resnet import defaults, settings as rules
from deeplab_resnet.data import classes as classes_lib
from deeplab_resnet.errors import SettingError
from deeplab_resnet.model.arch import VARIANTS
from deeplab_resnet.training import class_weights


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of one training run; defaults are the 2017 port's train.py.

    The fields are the training scripts' flags (`batch_size` is --batch-size),
    except `variant` (--model), `new_head` (--not-restore-last) and `train_bn`
    (--is-training). A config checks its fields when it is made (a SettingError
    naming the first bad field: `deeplab_resnet.settings`); errors and messages
    about a setting name its field, and the command line shows the flag instead.
    Lists given for the tuple fields are kept as tuples.

    Attributes:
        data_dir, data_list: the list file of 'IMAGE LABEL' lines and the folder
            its paths are relative to.
        ignore_label: label value that is not scored.
        variant, num_classes: the network (None: the checkpoint's, else the defaults).
        class_names: one name per class (a tuple), recorded in the checkpoints for
            evaluation and inference to show (None: none; a resumed run keeps the
            names it recorded, and other names are another run).
        classes: a classes file (path, or a `deeplab_resnet.data.classes.Classes`):
            its names and colours are recorded in the checkpoints, and `num_classes`
            and `class_names` follow from it (given too, they must agree). Read when
            the config is made: the field then holds the `Classes`.
        prototxt: deploy prototxt for a `.caffemodel` in `restore_from`.
        batch_size: images per mini-batch on each replica.
        input_size: (height, width) of the crops.
        learning_rate, momentum, power, weight_decay: optimizer settings
            (momentum, power and weight decay: Caffe SGD only).
        num_steps: updates in the whole run.
        grad_update_every: mini-batches whose gradients make one update
            (Caffe's iter_size).
        scales: input scales of multi-scale training, the first the reference.
        random_mirror, random_scale, scale_mode: augmentation.
        random_seed: seed of data order, augmentation and new weights (the input
            pipeline and initial weights are stateless functions of it, so a run
            is reproducible without TensorFlow's global seed).
        restore_from: starting weights of a new run (checkpoint, .caffemodel, ...), or None.
        from_scratch: let a head-only recipe train on a random backbone (no
            `restore_from`), which is otherwise refused.
        new_head: do not restore the head; start one with `num_classes` classes.
        train_bn, bn_momentum: train BatchNorm, and its moving-average fraction.
        save_num_images, save_pred_every, snapshot_dir, keep_checkpoints:
            summaries and checkpoints.
        stop_after: end this run after N updates (None: run to `num_steps`).
        deterministic: make TensorFlow's kernels deterministic for the whole
            process (`tf.config.experimental.enable_op_determinism`); with it, a
            resumed run equals an uninterrupted one bit for bit on CPU. The other
            process-wide state `train` may set is the multi-worker strategy's
            when it makes one (`distribute.make_strategy`: the runtime configured
            for the cluster, SIGTERM taken for preemption). TensorFlow's global
            seed is never set: nothing in training draws from it.
        jit: compile the update with XLA (refused with `deterministic`, and with
            several replicas on CPU, when `train` starts).
        precision: the number format the network computes in: "fp32", "bf16"
            or "fp16" (with dynamic loss scaling); weights, logits and loss stay
            float32.
        strategy: "default", "mirrored" or "multi-worker" (`deeplab_resnet.runtime.distribute`).
        class_weights: loss weight of each class: "auto" (median-frequency balancing of
            the training labels, counted before the first update and recorded, so that a
            resume uses the same weights), a file of one weight per line in class order,
            or a sequence of numbers; None: every class 1, Caffe's loss.
        ohem_fraction: 0 < F <= 1: only the hardest F of the valid pixels of each
            global batch count (bootstrapped cross-entropy); None: all.
        val_list, val_data_dir: a labelled list to validate on while training, on
            the chief, as evaluate.py scores (`val_data_dir` None: `data_dir`).
        val_every: validate every N updates (None: at every checkpoint, every
            `save_pred_every`); the best checkpoint is kept in `snapshot_dir`/best/.
        val_scales, val_flip, val_deeplab_protocol, val_pad_size: the test protocol
            of the validation (evaluate.py's --scales, --flip, --deeplab-protocol,
            --pad-size).
        config_file: the TOML file the settings were read from, recorded in the run
            record (None: none).

    Example:
        >>> config = TrainConfig(data_dir="data", data_list="data/train.txt", variant="tiny",
        ...                      num_classes=4, input_size=(65, 65), num_steps=10)
        >>> TrainConfig.from_dict(config.to_dict()) == config
        True
    """
    data_dir: str = "/home/VOCdevkit"
    data_list: str = "./dataset/train.txt"
    ignore_label: int = defaults.IGNORE_LABEL
    variant: str | None = None
    num_classes: int | None = None
    class_names: tuple | None = None
    classes: object = None
    prototxt: str | None = None
    batch_size: int = 10
    input_size: tuple = (defaults.INPUT_SIZE, defaults.INPUT_SIZE)
    learning_rate: float = 2.5e-4
    momentum: float = 0.9
    power: float = 0.9
    weight_decay: float = 5e-4
    num_steps: int = 20001
    grad_update_every: int = 1
    scales: tuple = (1.0, 0.75, 0.5)
    random_mirror: bool = False
    random_scale: bool = False
    scale_mode: str = "uniform"
    random_seed: int = 1234
    restore_from: str | None = None
    from_scratch: bool = False
    new_head: bool = False
    train_bn: bool = False
    bn_momentum: float = defaults.BN_MOMENTUM
    save_num_images: int = 2
    save_pred_every: int = 1000
    snapshot_dir: str = "./snapshots/"
    keep_checkpoints: int = 5
    stop_after: int | None = None
    deterministic: bool = False
    jit: bool = False
    precision: str = rules.DEFAULT_PRECISION
    strategy: str = "default"
    class_weights: str | tuple | None = None
    ohem_fraction: float | None = None
    val_list: str | None = None
    val_data_dir: str | None = None
    val_every: int | None = None
    val_scales: tuple = (1.0,)
    val_flip: bool = False
    val_deeplab_protocol: bool = False
    val_pad_size: int = defaults.PAD_SIZE
    config_file: str | None = None

    def __post_init__(self):
        for field in ("class_names", "input_size", "scales", "val_scales"):
            value = getattr(self, field)
            if isinstance(value, list):
                object.__setattr__(self, field, tuple(value))
        rules.check_fields(self, _RULES)
        object.__setattr__(self, "class_weights", class_weights.check_setting(self.class_weights))
        if self.val_list is None and (self.val_every is not None
                                      or self.val_data_dir is not None):
            raise SettingError("{val_every} and {val_data_dir} need {val_list}, the list "
                               "to validate on", "val_every", "val_data_dir", "val_list")
        classes_lib.fill_config(self)

    @property
    def class_colours(self):
        """The (R, G, B) of each class, from `classes` (None without one)."""
        return None if self.classes is None else self.classes.colours

    def to_dict(self):
        """The settings as a JSON-safe dict ({field: value}; tuples as lists; `classes` as
        its file's path, or its lines when made in memory)."""
        return {field.name: _json_value(getattr(self, field.name))
                for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, settings):
        """The config of `to_dict`'s dict (a subset of fields: the others keep their defaults).

        Raises:
            SettingError: a key that is not a field.
        """
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise SettingError(f"not a training setting: {', '.join(unknown)} (the settings are "
                               f"the fields of TrainConfig)")
        return cls(**settings)


def _json_value(value):
    if isinstance(value, classes_lib.Classes):
        return value.path if value.path and os.path.isfile(value.path) else value.lines()
    return list(value) if isinstance(value, tuple) else value


_BOOLEANS = ("random_mirror", "random_scale", "from_scratch", "new_head", "train_bn",
             "deterministic", "jit", "val_flip", "val_deeplab_protocol")
_POSITIVE = ("batch_size", "num_steps", "grad_update_every", "save_pred_every",
             "keep_checkpoints")
# TrainConfig's fields and their rules, in the order of the fields.
_RULES = {
    "data_dir": rules.PATH.or_none(), "data_list": rules.PATH,
    "ignore_label": rules.LABEL_VALUE, "variant": rules.one_of(VARIANTS).or_none(),
    "num_classes": rules.POSITIVE_INT.or_none(), "class_names": rules.CLASS_NAMES.or_none(),
    "prototxt": rules.PATH.or_none(), "input_size": rules.INPUT_SIZE,
    "learning_rate": rules.POSITIVE_NUMBER, "momentum": rules.NON_NEGATIVE_NUMBER,
    "power": rules.NON_NEGATIVE_NUMBER, "weight_decay": rules.NON_NEGATIVE_NUMBER,
    "scales": rules.SCALES, "scale_mode": rules.one_of(rules.SCALE_MODES),
    "random_seed": rules.INTEGER, "restore_from": rules.PATH.or_none(),
    "bn_momentum": rules.FRACTION, "save_num_images": rules.NON_NEGATIVE_INT,
    "snapshot_dir": rules.PATH, "stop_after": rules.POSITIVE_INT.or_none(),
    "precision": rules.one_of(rules.PRECISIONS), "strategy": rules.one_of(rules.STRATEGIES),
    "ohem_fraction": rules.OHEM_FRACTION.or_none(), "val_list": rules.PATH.or_none(),
    "val_data_dir": rules.PATH.or_none(), "val_every": rules.POSITIVE_INT.or_none(),
    "val_scales": rules.SCALES, "val_pad_size": rules.POSITIVE_INT,
    "config_file": rules.PATH.or_none(),
    **{field: rules.POSITIVE_INT for field in _POSITIVE},
    **{field: rules.BOOLEAN for field in _BOOLEANS},
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What one training script changes in the shared loop.

    Attributes:
        name: the script it stands for ("train.py", ...): the first word of the
            startup summary and the `script` of its run records.
        optimizer: "sgd" (Caffe SGD, poly learning rate) or "adam" (constant rate).
        multi_scale: train through `msc.MultiScale` with `scales`.
        head_only: train only the ASPP head (fc1_voc12_*).
        defaults: `TrainConfig` defaults that differ for this script.
    """
    name: str
    optimizer: str = "sgd"
    multi_scale: bool = False
    head_only: bool = False
    defaults: dict = dataclasses.field(default_factory=dict)

    def config(self, **settings):
        """A `TrainConfig` with this recipe's defaults and `settings`."""
        return TrainConfig(**{**self.defaults, **settings})


TRAIN = Recipe("train.py")
TRAIN_MSC = Recipe("train_msc.py", multi_scale=True,
                   defaults={"batch_size": 1, "save_num_images": 1, "grad_update_every": 10,
                             "snapshot_dir": "./snapshots_msc/"})
FINE_TUNE = Recipe("fine_tune.py", optimizer="adam", head_only=True,
                   defaults={"batch_size": 4, "learning_rate": 1e-4, "num_steps": 20000,
                             "snapshot_dir": "./snapshots_finetune/"})

# The recipes by the names `train` takes.
RECIPES = {"train": TRAIN, "train_msc": TRAIN_MSC, "fine_tune": FINE_TUNE}


def get_recipe(recipe):
    """The `Recipe` called `recipe` ("train", "train_msc" or "fine_tune"), or `recipe` itself.

    Raises:
        SettingError: an unknown name.
    """
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise SettingError(f"unknown training recipe {recipe!r} (choose from "
                           f"{', '.join(RECIPES)})")
    return RECIPES[recipe]
