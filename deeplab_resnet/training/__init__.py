"""Training: `train(config, recipe, callbacks=..., stop=...)`, the one loop behind train.py,
train_msc.py and fine_tune.py.

A `TrainConfig` holds a run's settings; a `Recipe` ("train", "train_msc",
"fine_tune") says what differs between the scripts: the optimizer (Caffe SGD
with the poly schedule, or Adam), single- or multi-scale loss, whether only
the head trains, and defaults. `train` returns a `TrainResult`, tells
`Callback`s of every update and checkpoint, stops cleanly when its
`StopRequest` is set, and raises the typed errors of `deeplab_resnet.errors`.
It logs (`logging`), and prints nothing. Everything else is written once, in
these modules:

    config      TrainConfig (to_dict / from_dict), Recipe and the three recipes
    losses      cross-entropy at logit resolution (class weights, OHEM); the objective
    class_weights  the weights of a file, or median-frequency balancing ("auto")
    optim       Caffe SGD, Adam, DeepLab's learning-rate multipliers, poly schedule
    step        loss scaling and the compiled update (micro-batches, replicas)
    state       the model, optimizer, counters and checkpoint of a run
    summaries   TensorBoard scalars and image strips
    snapshots   checkpoint saving (finite-weights guard), the chief's save folder,
                removing unfinished saves, resuming a snapshot folder (values checked first)
    run_record  what a run is, so that a snapshot folder only resumes that run
    folder_lock one run per snapshot folder: the OS file lock `train` holds on it
    memory      the memory one update needs, checked against the machine's before the first
    callbacks   Callback and TrainResult (no TensorFlow: the commands' callbacks)
    validation  scores on a validation list while training; the best checkpoint
    loop        train: startup checks and report, the updates, saving, stopping

The room may import `predict`, `weights`, `data`, `model`, `runtime` and the base
modules; never `cli`.

One update = `grad_update_every` forward/backward passes (micro-batches) whose
gradients are averaged (Caffe's `iter_size`), then one optimizer step. The
loss of a mini-batch is the mean over its valid pixels.

A `StopRequest` (`deeplab_resnet.runtime.stop`; the commands set it on SIGTERM or
SIGINT) ends a run at the next update boundary, with a checkpoint.

Resuming is exact: the checkpoint holds the weights, the optimizer slots, the
update count and the number of examples consumed, and the input pipeline is a
stateless function of (seed, example number).

Distribution (`strategy`, `deeplab_resnet.runtime.distribute`): the model's variables,
the optimizer slots and the step counters are created under the strategy's
scope; each replica reads `batch_size` examples of the global batch, its loss
is its share of the mean over the global batch's valid pixels, and the
gradients are summed over replicas before the optimizer runs, in replica
context, the same update on every replica. Only the chief writes checkpoints
and summaries.

Precision (`precision`): "bf16" and "fp16" make the network compute in
bfloat16 or float16 on float32 variables; logits, loss and updates are
float32. float16 uses dynamic loss scaling (`LossScale`).

Example:
    >>> from deeplab_resnet.training import TrainConfig, train
    >>> config = TrainConfig(data_dir="data", data_list="data/train.txt", variant="tiny",
    ...                      num_classes=4, batch_size=2, input_size=(65, 65), num_steps=10,
    ...                      snapshot_dir="snap")
    >>> result = train(config, recipe="train")  # doctest: +SKIP
"""

import importlib
import logging

from deeplab_resnet.training.callbacks import Callback, TrainResult
from deeplab_resnet.training.config import (FINE_TUNE, RECIPES, TRAIN, TRAIN_MSC, Recipe,
                                            TrainConfig)

# Silent unless the application configures logging (no "last resort" output on stderr).
logging.getLogger(__name__).addHandler(logging.NullHandler())

# What needs TensorFlow loads on first use (PEP 562), so that the settings, the recipes and
# the callbacks (the commands' flags) load without it.
_LAZY = {"StopRequest": "deeplab_resnet.runtime.stop", "train": "deeplab_resnet.training.loop",
         "build_model": "deeplab_resnet.training.state"}

__all__ = ["FINE_TUNE", "RECIPES", "TRAIN", "TRAIN_MSC", "Callback", "Recipe", "StopRequest",
           "TrainConfig", "TrainResult", "build_model", "train"]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
