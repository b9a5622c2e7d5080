"""What a training run is told: `TrainConfig` (the settings) and `Recipe` (what a script changes).

TensorFlow-free: the command line builds its flags from these defaults.
"""

import dataclasses

from deeplab_resnet import defaults


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The settings of one training run; defaults are the 2017 port's train.py.

    The fields are the training scripts' flags (`batch_size` is --batch-size),
    except `variant` (--model), `new_head` (--not-restore-last) and `train_bn`
    (--is-training). Errors about a setting name its field; the command line
    shows the flag instead.

    Attributes:
        data_dir, data_list: the list file of 'IMAGE LABEL' lines and the folder
            its paths are relative to.
        ignore_label: label value that is not scored.
        variant, num_classes: the network (None: the checkpoint's, else the defaults).
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
        random_seed: seed of data order, augmentation and new weights.
        restore_from: starting weights of a new run (checkpoint, .caffemodel, ...), or None.
        from_scratch: let a head-only recipe train on a random backbone (no
            `restore_from`), which is otherwise refused.
        new_head: do not restore the head; start one with `num_classes` classes.
        train_bn, bn_momentum: train BatchNorm, and its moving-average fraction.
        save_num_images, save_pred_every, snapshot_dir, keep_checkpoints:
            summaries and checkpoints.
        stop_after: end this run after N updates (None: run to `num_steps`).
        deterministic, jit, mixed_precision, strategy: execution.
    """
    data_dir: str = "/home/VOCdevkit"
    data_list: str = "./dataset/train.txt"
    ignore_label: int = defaults.IGNORE_LABEL
    variant: str = None
    num_classes: int = None
    prototxt: str = None
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
    restore_from: str = None
    from_scratch: bool = False
    new_head: bool = False
    train_bn: bool = False
    bn_momentum: float = defaults.BN_MOMENTUM
    save_num_images: int = 2
    save_pred_every: int = 1000
    snapshot_dir: str = "./snapshots/"
    keep_checkpoints: int = 5
    stop_after: int = None
    deterministic: bool = False
    jit: bool = False
    mixed_precision: str = "none"
    strategy: str = "default"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What one training script changes in the shared loop.

    Attributes:
        name: script name, for messages.
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
