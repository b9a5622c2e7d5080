"""Training: the one loop behind train.py, train_msc.py and fine_tune.py.

A `TrainConfig` holds a run's settings; a `Recipe` says what differs between
the scripts: the optimizer (Caffe SGD with the poly schedule, or Adam),
single- or multi-scale loss, whether only the head trains, and defaults.
Everything else is written once, in these modules:

    config      TrainConfig, Recipe and the three scripts' recipes
    losses      cross-entropy at logit resolution; the (multi-scale) objective
    optim       Caffe SGD, Adam, DeepLab's learning-rate multipliers, poly schedule
    step        loss scaling and the compiled update (micro-batches, replicas)
    summaries   TensorBoard scalars and image strips
    snapshots   checkpoint saving (finite-weights guard), resuming, the head check
    loop        model building and the loop, with an `on_save` hook

One update = `micro_batches` forward/backward passes whose gradients are
averaged (Caffe's `iter_size`, `grad_update_every`), then one optimizer step. The
loss of a mini-batch is the mean over its valid pixels.

SIGTERM or SIGINT (`deeplab_resnet.stop`) ends a run at the next update
boundary with a checkpoint, exit status 128 + the signal number.

Resuming is exact: the checkpoint holds the weights, the optimizer slots, the
update count and the number of examples consumed, and the input pipeline is a
stateless function of (seed, example number).

Distribution (`strategy`, `deeplab_resnet.distribute`): the model's variables,
the optimizer slots and the step counters are created under the strategy's
scope; each replica reads `batch_size` examples of the global batch, its loss
is its share of the mean over the global batch's valid pixels, and the
gradients are summed over replicas before the optimizer runs, in replica
context, the same update on every replica. Only the chief writes checkpoints
and summaries.

Mixed precision (`mixed_precision`): the network computes in bfloat16 or
float16 on float32 variables; logits, loss and updates are float32. float16
uses dynamic loss scaling (`LossScale`).
"""

from deeplab_resnet.training.config import FINE_TUNE, TRAIN, TRAIN_MSC, Recipe, TrainConfig
from deeplab_resnet.training.loop import build_model, train

__all__ = ["FINE_TUNE", "TRAIN", "TRAIN_MSC", "Recipe", "TrainConfig", "build_model", "train"]
