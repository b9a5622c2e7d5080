"""The one training loop behind train.py, train_msc.py and fine_tune.py.

A `Recipe` says what differs between the scripts: the optimizer (Caffe SGD
with the poly schedule, or Adam), single- or multi-scale loss, whether only
the head trains, and flag defaults. Everything else (flags, model building,
restore and resume, the input pipeline, the compiled step, checkpoints,
summaries, progress, NaN handling) is written once here.

One update = `micro_batches` forward/backward passes whose gradients are
averaged (Caffe's `iter_size`, --grad-update-every), then one optimizer step. The
loss of a mini-batch is the mean over its valid pixels.

SIGTERM or SIGINT (`deeplab_resnet.stop`) ends a run at the next update
boundary with a checkpoint, exit status 128 + the signal number.

Resuming is exact: the checkpoint holds the weights, the optimizer slots, the
update count and the number of examples consumed, and the input pipeline is a
stateless function of (seed, example number).

Distribution (--strategy, `deeplab_resnet.distribute`): the model's variables,
the optimizer slots and the step counters are created under the strategy's
scope; each replica reads --batch-size examples of the global batch, its loss
is its share of the mean over the global batch's valid pixels, and the
gradients are summed over replicas before the optimizer runs, in replica
context, the same update on every replica. Only the chief writes checkpoints
and summaries.

Mixed precision (--mixed-precision): the network computes in bfloat16 or
float16 on float32 variables; logits, loss and updates are float32. float16
uses dynamic loss scaling (`LossScale`).
"""

import contextlib
import dataclasses
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from deeplab_resnet.tf_quiet import tf
from tensorflow.core.framework import summary_pb2
from tqdm import tqdm

from deeplab_resnet import checkpoint as ckpt_lib
from deeplab_resnet import cli
from deeplab_resnet import distribute, geometry, run_record
from deeplab_resnet.errors import Stopped, UserError, first_line
from deeplab_resnet.image_reader import SCALE_MODES, ImageReader
from deeplab_resnet.model import (DEFAULT_VARIANT, HEAD_PREFIX, IMG_MEAN, DeepLabResNet,
                                  is_head_variable)
from deeplab_resnet.msc import MultiScale
from deeplab_resnet.stop import StopRequests, signal_name
from deeplab_resnet.utils import colorize

CHECKPOINT_NAME = "model.ckpt"

# Flag defaults of the 2017 port's train.py; a Recipe overrides some.
DEFAULTS = {
    "batch_size": 10,
    "data_dir": "/home/VOCdevkit",
    "data_list": "./dataset/train.txt",
    "input_size": (321, 321),
    "learning_rate": 2.5e-4,
    "momentum": 0.9,
    "power": 0.9,
    "weight_decay": 5e-4,
    "num_steps": 20001,
    "save_num_images": 2,
    "save_pred_every": 1000,
    "snapshot_dir": "./snapshots/",
    "random_seed": 1234,
    "grad_update_every": 1,
    "scales": (1.0, 0.75, 0.5),
    "keep_checkpoints": 5,
    "bn_momentum": 0.999,
}

# --mixed-precision: the dtype the network computes in.
COMPUTE_DTYPES = {"none": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}

# Caffe DeepLab's lr_mult for the head (fc1_voc12_*): weights 10x, biases 20x.
HEAD_WEIGHT_LR_MULT = 10.0
HEAD_BIAS_LR_MULT = 20.0


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What one training script changes in the shared loop.

    Attributes:
        name: script name, for messages.
        optimizer: "sgd" (Caffe SGD, poly learning rate) or "adam" (constant rate).
        multi_scale: train through `msc.MultiScale` with --scales.
        head_only: train only the ASPP head (fc1_voc12_*).
        defaults: flag defaults that differ from `DEFAULTS`.
    """
    name: str
    optimizer: str = "sgd"
    multi_scale: bool = False
    head_only: bool = False
    defaults: dict = dataclasses.field(default_factory=dict)


TRAIN = Recipe("train.py")
TRAIN_MSC = Recipe("train_msc.py", multi_scale=True,
                   defaults={"batch_size": 1, "save_num_images": 1, "grad_update_every": 10})
FINE_TUNE = Recipe("fine_tune.py", optimizer="adam", head_only=True,
                   defaults={"batch_size": 4, "learning_rate": 1e-4, "num_steps": 20000,
                             "snapshot_dir": "./snapshots_finetune/"})


def build_parser(recipe, description=None):
    """The argument parser of a training script: model, data and training flags.

    Args:
        recipe: the script's `Recipe` (selects optimizer flags and defaults).
        description: the script's help text.
    """
    d = {**DEFAULTS, **recipe.defaults}
    parser = cli.ArgumentParser(description=description)
    cli.add_model_args(parser)
    cli.add_data_args(parser, data_dir=d["data_dir"], data_list=d["data_list"])
    g = parser.add_argument_group("training")
    g.add_argument("--batch-size", type=cli.positive_int, default=d["batch_size"],
                   help=f"images per mini-batch on each replica; with --strategy mirrored or "
                        f"multi-worker the global batch is this x replicas "
                        f"(default: {d['batch_size']})")
    g.add_argument("--input-size", type=cli.input_size, default=d["input_size"],
                   help="crop size 'H,W' (default: %(default)s)")
    g.add_argument("--learning-rate", type=cli.positive_float, default=d["learning_rate"],
                   help="base learning rate (default: %(default)s)")
    if recipe.optimizer == "sgd":
        g.add_argument("--momentum", type=cli.non_negative_float, default=d["momentum"],
                       help="SGD momentum (default: %(default)s)")
        g.add_argument("--power", type=cli.non_negative_float, default=d["power"],
                       help="power of the poly learning-rate schedule (default: %(default)s)")
        g.add_argument("--weight-decay", type=cli.non_negative_float, default=d["weight_decay"],
                       help="L2 decay of convolution weights (default: %(default)s)")
    g.add_argument("--num-steps", type=cli.positive_int, default=d["num_steps"],
                   help="number of updates (default: %(default)s)")
    g.add_argument("--grad-update-every", type=cli.positive_int, default=d["grad_update_every"],
                   help="mini-batches whose gradients are averaged per update, each loss the mean "
                        "over its own valid pixels (Caffe's iter_size: batch 10 as --batch-size 2 "
                        "--grad-update-every 5; default: %(default)s)")
    if recipe.multi_scale:
        g.add_argument("--scales", type=cli.scales, default=d["scales"],
                       help="input scales, the first is the reference (default: 1.0,0.75,0.5)")
    g.add_argument("--random-mirror", action="store_true",
                   help="flip images and labels horizontally at random")
    g.add_argument("--random-scale", action="store_true",
                   help="rescale images and labels by a random factor")
    g.add_argument("--scale-mode", choices=SCALE_MODES, default="uniform",
                   help="random scale: 'uniform' in [0.5, 1.5] (the 2017 TF port, default) or "
                        "'caffe' from {0.5, 0.75, 1, 1.25, 1.5} (DeepLab's Caffe)")
    g.add_argument("--random-seed", type=int, default=d["random_seed"],
                   help="seed of data order, augmentation and new weights (default: %(default)s)")
    g.add_argument("--restore-from", default=None,
                   help=f"starting weights of a new run: {cli.WEIGHTS_HELP} (a training "
                        "snapshot too: its optimizer state is dropped; default: random "
                        "initialisation); when --snapshot-dir holds this run's checkpoint, "
                        "training resumes from it instead")
    if recipe.head_only:
        g.add_argument("--from-scratch", action="store_true",
                       help="allow training the head on a randomly initialised backbone when "
                            "no --restore-from is given (refused otherwise: almost always a "
                            "forgotten --restore-from)")
    g.add_argument("--not-restore-last", action="store_true",
                   help="do not restore the head (fc1_voc12_*): start a new one with "
                        "--num-classes classes (default 21), e.g. from an ImageNet ResNet, "
                        "DeepLab's COCO-pretrained init.caffemodel or for another class count")
    if not recipe.head_only:
        g.add_argument("--is-training", action="store_true",
                       help="train BatchNorm (batch statistics, moving averages, scale and "
                            "offset); default: frozen")
        g.add_argument("--bn-momentum", type=cli.unit_interval, default=d["bn_momentum"],
                       help="moving-average fraction of the BatchNorm statistics with "
                            "--is-training (Caffe's %(default)s; lower for short runs from "
                            "scratch)")
    g.add_argument("--save-num-images", type=cli.non_negative_int, default=d["save_num_images"],
                   help="images in each TensorBoard image summary (default: %(default)s)")
    g.add_argument("--save-pred-every", type=cli.positive_int, default=d["save_pred_every"],
                   help="save a checkpoint and image summaries every N updates "
                        "(default: %(default)s)")
    g.add_argument("--snapshot-dir", default=d["snapshot_dir"],
                   help="checkpoints and TensorBoard logs of one run; rerunning the same "
                        "command resumes from the latest checkpoint here, and another run's "
                        "checkpoint is refused (default: %(default)s)")
    g.add_argument("--keep-checkpoints", type=cli.positive_int, default=d["keep_checkpoints"],
                   help="checkpoints kept in --snapshot-dir (default: %(default)s)")
    g.add_argument("--stop-after", type=cli.positive_int, default=None,
                   help="end this run after N updates (a checkpoint is saved); rerun to go on")
    g.add_argument("--deterministic", action="store_true",
                   help="use deterministic kernels (tf.config.experimental.enable_op_determinism)")
    g.add_argument("--jit", action="store_true", help="compile the training step with XLA")
    g.add_argument("--mixed-precision", choices=sorted(COMPUTE_DTYPES), default="none",
                   help="compute in bfloat16 ('bf16') or float16 ('fp16', with dynamic loss "
                        "scaling) on float32 weights; logits and loss stay float32 "
                        "(default: none)")
    g.add_argument("--strategy", choices=distribute.STRATEGIES, default="default",
                   help="'mirrored': all local GPUs; 'multi-worker': one process per machine, "
                        "the cluster in TF_CONFIG. Each replica reads --batch-size images: the "
                        "global batch is --batch-size x replicas (default: default, one device)")
    return parser


# -- losses ------------------------------------------------------------------------------------


def cross_entropy_sums(logits, labels, ignore_label):
    """Softmax cross-entropy at logit resolution, summed over the valid pixels.

    Labels are shrunk to the logits as DeepLab does (`geometry.shrink_labels`:
    logit i takes the label at pixel i*(H-1)/(h-1)). Pixels equal to
    `ignore_label`, or outside [0, num_classes), contribute nothing (the 2017
    port kept only labels below the class count). Computed in float32.

    Returns:
        (summed loss, correctly classified valid pixels, valid pixels).
    """
    num_classes = logits.shape[-1]
    labels = geometry.shrink_labels(labels, geometry.spatial_size(logits))
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    logits = tf.cast(logits, tf.float32)
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.where(valid, labels, 0), logits=logits)
    weight = tf.cast(valid, tf.float32)
    hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=labels.dtype), labels), tf.float32)
    return tf.reduce_sum(per_pixel * weight), tf.reduce_sum(hits * weight), tf.reduce_sum(weight)


def cross_entropy(logits, labels, ignore_label):
    """`cross_entropy_sums` with the loss averaged over the valid pixels.

    Returns:
        (mean loss, correctly classified valid pixels, valid pixels).
    """
    loss, hits, count = cross_entropy_sums(logits, labels, ignore_label)
    return loss / tf.maximum(count, 1.0), hits, count


class Objective:
    """Forward pass and loss: one scale, or MSC (fused + every scale).

    Args:
        model: the DeepLabResNet.
        ignore_label: label value not scored.
        scales: None for single-scale; else the MSC scales, the first the reference.
        compute_dtype: dtype the network computes in (images are cast to it);
            the loss is float32 either way.
    """

    def __init__(self, model, ignore_label, scales=None, compute_dtype=tf.float32):
        self.model = model
        self.ignore_label = ignore_label
        self.msc = MultiScale(model, scales) if scales is not None else None
        self.compute_dtype = compute_dtype

    def logits(self, images, training=False):
        """Logits (MSC: fused) for preprocessed images, in the compute dtype."""
        images = tf.cast(images, self.compute_dtype)
        if self.msc is None:
            return self.model(images, training=training)
        return self.msc(images, training=training)[0]

    def __call__(self, images, labels, training=True):
        """(loss, correct pixels, valid pixels) of this replica's part of a mini-batch.

        MSC: CE(fused) + sum over scales of CE(scale), each against the labels
        resized to its own logits; accuracy is measured on the fused logits.
        Each term is divided by its valid pixels in the whole global batch
        (all replicas), so the loss summed over replicas is the mean over
        the global batch; with one replica, the mini-batch's mean.
        """
        images = tf.cast(images, self.compute_dtype)
        if self.msc is None:
            outputs = [self.model(images, training=training)]
        else:
            fused, per_scale = self.msc(images, training=training)
            outputs = [fused] + list(per_scale)
        terms = [cross_entropy_sums(out, labels, self.ignore_label) for out in outputs]
        counts = distribute.sum_over_replicas(tf.stack([count for _, _, count in terms]))
        loss = tf.add_n([total / tf.maximum(counts[i], 1.0)
                         for i, (total, _, _) in enumerate(terms)])
        return loss, terms[0][1], terms[0][2]


# -- optimizers --------------------------------------------------------------------------------


class CaffeSGD(tf.Module):
    """Caffe's SGD: v <- m*v + lr*lr_mult*(g + wd*decay_mult*w); w <- w - v.

    The learning rate sits inside the velocity, as in Caffe (TF1's
    MomentumOptimizer put it outside, which differs once the rate changes).

    Args:
        params: {name: (variable, lr_mult, decay_mult)}; slots are created
            now, so a checkpoint restores into them directly.
        momentum: m.
        weight_decay: wd.
    """

    def __init__(self, params, momentum=0.9, weight_decay=5e-4, name=None):
        super().__init__(name=name or "caffe_sgd")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.lr_mult = {k: float(lr) for k, (_, lr, _) in params.items()}
        self.decay_mult = {k: float(dm) for k, (_, _, dm) in params.items()}
        self.velocity = {k: tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                        name=f"velocity/{k}")
                         for k, (v, _, _) in params.items()}

    def apply(self, updates, learning_rate):
        """One update. `updates`: [(name, gradient, variable)]."""
        for key, grad, var in updates:
            velocity = self.velocity[key]
            step = grad
            decay = self.weight_decay * self.decay_mult[key]
            if decay:
                step = step + decay * var
            velocity.assign(self.momentum * velocity + learning_rate * self.lr_mult[key] * step)
            var.assign_sub(velocity)


class Adam(tf.Module):
    """Adam as TF1's AdamOptimizer (what the 2017 port's fine_tune.py used).

    Args:
        params: {name: variable}; slots are created now.
        beta1, beta2, epsilon: Adam's constants.
    """

    def __init__(self, params, beta1=0.9, beta2=0.999, epsilon=1e-8, name=None):
        super().__init__(name=name or "adam")
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.m = {k: tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"m/{k}")
                  for k, v in params.items()}
        self.v = {k: tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"v/{k}")
                  for k, v in params.items()}

    def apply(self, updates, learning_rate):
        """One update. `updates`: [(name, gradient, variable)]."""
        t = tf.cast(self.iterations + 1, tf.float32)
        rate = learning_rate * tf.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        for key, grad, var in updates:
            m, v = self.m[key], self.v[key]
            m.assign(self.beta1 * m + (1.0 - self.beta1) * grad)
            v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(grad))
            var.assign_sub(rate * m / (tf.sqrt(v) + self.epsilon))
        self.iterations.assign_add(1)


def sgd_params(model):
    """{name: (variable, lr_mult, decay_mult)} with DeepLab's multipliers.

    Backbone weights 1x, head weights 10x, head biases 20x, trained BatchNorm
    scale/offset 1x; weight decay on convolution weights only.
    """
    names = {id(v): k for k, v in model.params.items()}
    decayed = {id(v) for v in model.weight_decay_variables()}
    groups = ((model.backbone_weights(), 1.0), (model.head_weights(), HEAD_WEIGHT_LR_MULT),
              (model.head_biases(), HEAD_BIAS_LR_MULT), (model.bn_trainables(), 1.0))
    return {names[id(v)]: (v, lr_mult, 1.0 if id(v) in decayed else 0.0)
            for variables, lr_mult in groups for v in variables}


def poly_learning_rate(base, step, num_steps, power):
    """Caffe's poly policy: base * (1 - step / num_steps) ** power."""
    return base * max(0.0, 1.0 - step / num_steps) ** power


# -- the compiled step -------------------------------------------------------------------------


class LossScale(tf.Module):
    """Dynamic loss scaling for float16 training (checkpointed with the optimizer).

    The loss is multiplied by `scale` before differentiation and the
    gradients divided by it, so that small float16 gradients do not flush
    to zero. An update whose gradients overflow (inf or nan) is skipped and
    the scale halved; after `growth_interval` finite updates in a row the
    scale doubles.

    Args:
        initial: the first scale (a power of two).
        growth_interval: finite updates before the scale grows.
    """

    def __init__(self, initial=2.0 ** 15, growth_interval=2000, name=None):
        super().__init__(name=name or "loss_scale")
        self.growth_interval = int(growth_interval)
        self.scale = tf.Variable(float(initial), trainable=False, name="scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")

    def update(self, finite):
        """Adjusts the scale after an update whose gradients were `finite` (bool tensor)."""
        good = tf.where(finite, self.good_steps + 1, tf.constant(0, tf.int64))
        grow = good >= self.growth_interval
        self.scale.assign(self.scale * tf.where(finite, tf.where(grow, 2.0, 1.0), 0.5))
        self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), good))


class Trainer:
    """The update step: gradients of one or more micro-batches, averaged, applied once.

    With one micro-batch the gradient goes straight into the optimizer; with
    more, each micro-batch's gradient is added to accumulator variables (not
    checkpointed: an update never spans a checkpoint) and the mean is applied.
    Under a strategy each piece runs on every replica (`strategy.run`); the
    gradients are summed over replicas just before the optimizer, which then
    makes the same update on every replica. Each piece is a tf.function
    traced once; `jit` compiles the per-replica function with XLA.

    Args:
        objective: an `Objective`.
        optimizer: `CaffeSGD` or `Adam`.
        variables: {name: variable} to train (the optimizer's keys).
        jit: compile the step functions with XLA.
        strategy: the tf.distribute strategy the variables were created
            under (default: the current one).
        loss_scale: a `LossScale` for float16, or None.
    """

    def __init__(self, objective, optimizer, variables, jit=False, strategy=None,
                 loss_scale=None):
        self.objective = objective
        self.optimizer = optimizer
        self.names = list(variables)
        self.variables = [variables[k] for k in self.names]
        self.strategy = strategy or tf.distribute.get_strategy()
        self.loss_scale = loss_scale
        self._accumulators = None
        self._single = self._on_replicas(self._single_step, jit)
        self._accumulate = self._on_replicas(self._accumulate_step, jit)
        self._apply_mean = self._on_replicas(self._apply_accumulated, jit)
        self.predict = tf.function(self._predict)

    def _on_replicas(self, fn, jit):
        """A tf.function running `fn` on every replica; returns the first local replica's result.

        The results of the step functions are sums over replicas, the same on each.
        """
        replica_fn = tf.function(fn, jit_compile=jit)

        @tf.function
        def run(*args):
            results = self.strategy.run(replica_fn, args=args)
            return tf.nest.map_structure(
                lambda value: self.strategy.experimental_local_results(value)[0], results)
        return run

    def _gradients(self, images, labels):
        """Gradients of this replica's loss share (times the loss scale, if any) and the
        loss, correct and valid pixels summed over replicas."""
        with tf.GradientTape() as tape:
            loss, hits, pixels = self.objective(images, labels, training=True)
            scaled = loss if self.loss_scale is None else loss * self.loss_scale.scale
        grads = tape.gradient(scaled, self.variables)
        return grads, distribute.sum_over_replicas((loss, hits, pixels))

    def _apply(self, grads, learning_rate, loss_finite):
        """Sums `grads` over replicas and applies them unless they or the loss are not finite.

        Returns:
            False when training must stop (the loss, or without loss scaling
            the gradients, not finite). With loss scaling, overflowing
            gradients only skip this update and halve the scale.
        """
        grads = distribute.sum_over_replicas(grads)
        if self.loss_scale is not None:
            grads = [g / self.loss_scale.scale for g in grads]
        finite = tf.math.is_finite(tf.linalg.global_norm(grads))
        if loss_finite & finite:
            self.optimizer.apply(list(zip(self.names, grads, self.variables)), learning_rate)
        if self.loss_scale is None:
            return loss_finite & finite
        self.loss_scale.update(finite)
        return loss_finite

    def _single_step(self, images, labels, learning_rate):
        grads, (loss, hits, pixels) = self._gradients(images[0], labels[0])
        ok = self._apply(grads, learning_rate, tf.math.is_finite(loss))
        return loss, hits, pixels, ok

    def _accumulate_step(self, images, labels, index):
        grads, (loss, hits, pixels) = self._gradients(images[index], labels[index])
        for acc, grad in zip(self._accumulators, grads):
            acc.assign_add(grad)
        return loss, hits, pixels

    def _apply_accumulated(self, learning_rate, count, loss_finite):
        grads = [acc / count for acc in self._accumulators]
        ok = self._apply(grads, learning_rate, loss_finite)
        for acc in self._accumulators:
            acc.assign(tf.zeros_like(acc))
        return ok

    def step(self, images, labels, learning_rate):
        """One update from N micro-batches.

        Args:
            images: [N, B, H, W, 3] preprocessed crops (per replica: a
                distributed value of `ImageReader.batches`, or one tensor).
            labels: [N, B, H, W] labels, likewise.
            learning_rate: float.
        Returns:
            (mean loss of the micro-batches, pixel accuracy, ok): python
            values over the global batch; `ok` is False when the loss or the
            gradients were not finite and nothing was applied (with loss
            scaling, an overflow skips the update and leaves `ok` True).
        """
        learning_rate = tf.constant(learning_rate, tf.float32)
        count = int(self.strategy.experimental_local_results(images)[0].shape[0])
        if count == 1:
            loss, hits, pixels, ok = self._single(images, labels, learning_rate)
            return float(loss), float(hits) / max(float(pixels), 1.0), bool(ok)
        if self._accumulators is None:
            with self.strategy.scope():
                self._accumulators = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                                      for v in self.variables]
        losses, hits, pixels = [], 0.0, 0.0
        for i in range(count):
            loss, correct, valid = self._accumulate(images, labels, tf.constant(i))
            losses.append(float(loss))
            hits += float(correct)
            pixels += float(valid)
        loss = float(np.mean(losses))
        ok = self._apply_mean(learning_rate, tf.constant(count, tf.float32),
                              tf.constant(math.isfinite(loss)))
        return loss, hits / max(pixels, 1.0), bool(ok)

    def _predict(self, images):
        """Class map at the input size (pixel p reads logit p/8, as at test time) for summaries."""
        logits = self.objective.logits(images, training=False)
        resized = geometry.logits_to_image(logits, geometry.spatial_size(images))
        return tf.argmax(resized, -1, output_type=tf.int32)


# -- model and checkpoints ---------------------------------------------------------------------


def _check_head(path, skip_head):
    """A checkpoint without the DeepLab head (an ImageNet ResNet) needs --not-restore-last."""
    if skip_head or ckpt_lib.is_caffemodel(path):
        return
    if not any(name.startswith(HEAD_PREFIX) for name in ckpt_lib.param_names(path)):
        raise UserError(f"{path}: holds no DeepLab head ({HEAD_PREFIX}_*), e.g. an ImageNet "
                        "ResNet: add --not-restore-last to start a new head")


def build_model(args, latest):
    """The model to train: shaped like the snapshot to resume, else --restore-from, else new."""
    kwargs = {"train_bn": bool(getattr(args, "is_training", False)), "seed": args.random_seed,
              "bn_momentum": getattr(args, "bn_momentum", DEFAULTS["bn_momentum"])}
    if latest is not None:
        variant, classes = ckpt_lib.check_meta(latest, args.model, args.num_classes)
        return DeepLabResNet(variant or DEFAULT_VARIANT,
                             classes or ckpt_lib.DEFAULT_NUM_CLASSES, **kwargs)
    if args.restore_from:
        _check_head(args.restore_from, args.not_restore_last)
        return ckpt_lib.load_weights(args.restore_from, args.model, args.num_classes,
                                     skip_head=args.not_restore_last, prototxt=args.prototxt,
                                     **kwargs)
    return DeepLabResNet(args.model or DEFAULT_VARIANT,
                         args.num_classes or ckpt_lib.DEFAULT_NUM_CLASSES, **kwargs)


def _resume(checkpoint, latest, snapshot_dir):
    try:
        status = checkpoint.restore(latest)
    except ckpt_lib.READ_ERRORS as exc:
        raise ckpt_lib.corrupt(latest, exc) from None
    try:
        status.assert_existing_objects_matched()
    except AssertionError as exc:
        raise UserError(f"--snapshot-dir {snapshot_dir}: {latest} was written by another kind "
                        f"of training ({first_line(exc)[:120]}): give another --snapshot-dir, "
                        f"or --restore-from {latest} to start a new run from its weights") from None


# Flags that change the updates of a run, recorded in its checkpoints (`run_record`);
# those a script lacks are left out.
RUN_FLAGS = ("input_size", "learning_rate", "momentum", "power", "weight_decay", "is_training",
             "bn_momentum", "random_mirror", "random_scale", "scale_mode", "random_seed",
             "scales", "mixed_precision", "ignore_label")


def _run_settings(args):
    """The `run_record.new` settings of the command: `RUN_FLAGS`, the total and what is given."""
    given = args.restore_from is not None
    settings = {key: getattr(args, key) for key in RUN_FLAGS if hasattr(args, key)}
    return dict(settings, num_steps=args.num_steps, model=args.model,
                num_classes=args.num_classes,
                restore_from=os.path.abspath(args.restore_from) if given else None,
                not_restore_last=args.not_restore_last if given else None)


def _weights_source(args, latest, step, record):
    """Where the weights come from, for the first lines of output."""
    if latest is not None:
        return f"resuming from {latest} (update {step} of {args.num_steps})"
    if args.restore_from is None:
        return "random initialisation — no --restore-from given"
    path = args.restore_from
    if not ckpt_lib.is_caffemodel(path):
        path = ckpt_lib.resolve(path)
    new_head = (f"; new head ({HEAD_PREFIX}_*) with {record['num_classes']} classes"
                if args.not_restore_last else "")
    return f"{path}{new_head}"


def _image_summary(images, labels, predictions, ignore_label, count):
    """image | label | prediction strips as uint8 [count, H, 3W, 3]."""
    rgb = np.clip(images[:count] + IMG_MEAN, 0, 255)[..., ::-1].astype(np.uint8)

    def paint(values):
        values = np.where(values == ignore_label, 255, np.clip(values, 0, 255))
        return colorize(values)

    return np.concatenate([rgb, paint(labels[:count]), paint(predictions[:count])], axis=2)


def _metadata(plugin):
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin
    return metadata


# TensorBoard reads these; written with TensorFlow's own summary ops so that
# training does not need the tensorboard package (which tf.summary.scalar and
# tf.summary.image require).
_SCALAR_METADATA = _metadata("scalars")
_IMAGE_METADATA = _metadata("images")


def write_scalar(tag, value, step):
    """A TensorBoard scalar on the default summary writer."""
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step,
                     metadata=_SCALAR_METADATA)


def write_images(tag, images, step):
    """TensorBoard images (uint8 [N, H, W, 3]) on the default summary writer."""
    h, w = images.shape[1:3]
    encoded = [tf.io.encode_png(image) for image in images]
    tensor = tf.stack([tf.constant(str(w)), tf.constant(str(h))] + encoded)
    tf.summary.write(tag, tensor, step=step, metadata=_IMAGE_METADATA)


@tf.function
def all_finite(variables):
    """Whether no variable holds inf or nan: checked before every save."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])


def _write_image_summary(trainer, images, labels, args, step):
    """image | label | prediction strips of the first --save-num-images crops of the
    first micro-batch (of this worker's first replica)."""
    images, labels = (trainer.strategy.experimental_local_results(t)[0][0]
                      for t in (images, labels))
    shown = images[:args.save_num_images]
    strips = _image_summary(shown.numpy(), labels.numpy(), trainer.predict(shown).numpy(),
                            args.ignore_label, args.save_num_images)
    write_images("image_label_prediction", strips, step)


def _save(manager, model, step):
    """Saves a checkpoint unless the weights hold inf or nan; returns its path."""
    if not all_finite(list(model.params.values())):
        raise UserError(f"weights became inf or nan by update {step}: training stopped; last "
                        f"checkpoint: {manager.latest_checkpoint or 'none'} "
                        "(a lower --learning-rate may help)")
    prefix = os.path.join(manager.directory, f"{CHECKPOINT_NAME}-{step}")
    # A failed write (disk full) leaves the previous checkpoints as they were.
    with ckpt_lib.writing(prefix, partial=(prefix + ".*", prefix + "_temp*")):
        return manager.save(checkpoint_number=step)


def _log(message):
    tqdm.write(message, file=sys.stderr)


@contextlib.contextmanager
def _save_dir(snapshot_dir, chief):
    """Where this process saves checkpoints: --snapshot-dir on the chief.

    Every worker must save (saving may involve collective operations), so
    the others save to a temporary folder that is removed afterwards, as
    TensorFlow recommends for MultiWorkerMirroredStrategy.
    """
    if chief:
        yield snapshot_dir
        return
    folder = tempfile.mkdtemp(prefix="deeplab-worker-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def train(args, recipe):
    """Trains (or resumes training) as the flags say; returns the exit status.

    Args:
        args: parsed flags of `build_parser(recipe)`.
        recipe: the calling script's `Recipe`.
    """
    strategy = distribute.make_strategy(args.strategy)
    chief = distribute.is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 and args.jit and not tf.config.list_logical_devices("GPU"):
        raise UserError(f"--jit with {replicas} replicas needs GPUs: XLA cannot compile the "
                        "cross-replica sums on CPU")
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.random.set_seed(args.random_seed)
    snapshot_dir = cli.check_writable_dir(args.snapshot_dir, "--snapshot-dir")
    reader = ImageReader(args.data_dir, args.data_list, args.input_size,
                         random_scale=args.random_scale, random_mirror=args.random_mirror,
                         ignore_label=args.ignore_label, seed=args.random_seed,
                         scale_mode=args.scale_mode)
    micro = args.grad_update_every
    wanted = run_record.new(recipe.name, args.data_list, args.data_dir, len(reader),
                            args.batch_size, replicas, micro, _run_settings(args))
    latest = ckpt_lib.latest_in(snapshot_dir)
    record, notes = wanted, []
    if latest is not None:
        try:
            record, notes = run_record.check_resume(latest, snapshot_dir, wanted)
        except ckpt_lib.READ_ERRORS as exc:
            raise ckpt_lib.corrupt(latest, exc) from None
    elif recipe.head_only and args.restore_from is None and not args.from_scratch:
        raise UserError(f"{recipe.name} trains only the head: without --restore-from the "
                        "backbone would be random; give --restore-from (a trained or converted "
                        "checkpoint, or a .caffemodel), or --from-scratch to do it anyway")
    model = build_model(args, latest)
    record = dict(record, model=model.variant, num_classes=model.num_classes)
    distribute.replicate(strategy, model.params)
    distribute.replicate(strategy, model.meta)
    variables = {k: v for k, v in model.params.items()
                 if v.trainable and (is_head_variable(k) or not recipe.head_only)}
    with strategy.scope():
        if recipe.optimizer == "sgd":
            params = {k: p for k, p in sgd_params(model).items() if k in variables}
            optimizer = CaffeSGD(params, args.momentum, args.weight_decay)
        else:
            optimizer = Adam(variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        position = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_position")
        loss_scale = LossScale() if args.mixed_precision == "fp16" else None
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
        _resume(tf.train.Checkpoint(meta=model.meta, **state), latest, snapshot_dir)
    start = int(step.numpy())
    for note in notes:
        log(note)
    if chief:  # what this run is, on stdout; progress, notices and errors go to stderr
        stop = "" if args.stop_after is None else f", stopping after {args.stop_after} more"
        print(f"{recipe.name}: weights: {_weights_source(args, latest, start, record)}\n"
              f"{recipe.name}: model: {model.variant}, {model.num_classes} classes; data: "
              f"{len(reader)} images ({args.data_list})\n"
              f"{recipe.name}: batch: {args.batch_size} per replica x {replicas} replica(s) x "
              f"{micro} mini-batch(es) = {args.batch_size * replicas * micro} images per "
              f"update; updates: {start} done of {args.num_steps}{stop}\n"
              f"{recipe.name}: checkpoints: {snapshot_dir} (every {args.save_pred_every} "
              f"updates, the last {args.keep_checkpoints} kept)", flush=True)
    if start >= args.num_steps:
        log(f"{snapshot_dir}: already trained for {start} of --num-steps {args.num_steps} "
            "updates: nothing to do (a larger --num-steps continues this run)")
        return 0
    end = args.num_steps if args.stop_after is None else min(args.num_steps,
                                                              start + args.stop_after)
    objective = Objective(model, args.ignore_label,
                          scales=args.scales if recipe.multi_scale else None,
                          compute_dtype=COMPUTE_DTYPES[args.mixed_precision])
    trainer = Trainer(objective, optimizer, variables, jit=args.jit, strategy=strategy,
                      loss_scale=loss_scale)
    # Created after the first good update: bad data or a diverging first step
    # leaves no event file behind.
    writer = None

    def learning_rate(update):
        if recipe.optimizer == "sgd":
            return poly_learning_rate(args.learning_rate, update, args.num_steps, args.power)
        return args.learning_rate

    batches = reader.batches(args.batch_size, micro, start=int(position.numpy()),
                             strategy=strategy, num_classes=model.num_classes)
    with contextlib.closing(batches), _save_dir(snapshot_dir, chief) as save_dir, \
            StopRequests(strategy) as stop_requests, \
            tqdm(total=args.num_steps, initial=start, unit="step", dynamic_ncols=True,
                 desc=recipe.name, disable=not (chief and sys.stderr.isatty())) as bar:
        manager = tf.train.CheckpointManager(checkpoint, save_dir,
                                             max_to_keep=args.keep_checkpoints,
                                             checkpoint_name=CHECKPOINT_NAME)
        started = time.perf_counter()
        saved_at = None
        for images, labels in batches:
            update = int(step.numpy())
            lr = learning_rate(update)
            loss, accuracy, finite = trainer.step(images, labels, lr)
            if not finite:
                if writer is not None:
                    writer.flush()
                raise UserError(f"loss became {loss} at update {update + 1}: training stopped "
                                f"without applying it; last checkpoint: "
                                f"{manager.latest_checkpoint or 'none'} "
                                "(a lower --learning-rate may help)")
            step.assign_add(1)
            position.assign_add(micro * args.batch_size * replicas)
            done = update + 1
            if writer is None:
                writer = (tf.summary.create_file_writer(snapshot_dir) if chief
                          else tf.summary.create_noop_writer())
            with writer.as_default():
                write_scalar("loss", loss, done)
                write_scalar("learning_rate", lr, done)
                write_scalar("pixel_accuracy", accuracy, done)
                if loss_scale is not None:
                    write_scalar("loss_scale", float(loss_scale.scale.numpy()), done)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", refresh=False)
            bar.update(1)
            if done % args.save_pred_every == 0 or done == end:
                if chief and args.save_num_images:
                    with writer.as_default():
                        _write_image_summary(trainer, images, labels, args, done)
                saved = _save(manager, model, done)
                saved_at = done
                if chief and bar.disable:  # no progress bar: one line per checkpoint instead
                    rate = (done - start) / max(time.perf_counter() - started, 1e-9)
                    _log(f"update {done}/{args.num_steps}: loss {loss:.4f}, pixel accuracy "
                         f"{accuracy:.3f}, {rate:.2f} updates/s, "
                         f"ETA {(args.num_steps - done) / rate / 60:.1f} min; saved {saved}")
            if done >= end:
                break
            signum = stop_requests.poll()
            if signum is not None:
                if saved_at != done:
                    _save(manager, model, done)
                if writer is not None:
                    writer.flush()
                distribute.barrier(strategy)
                raise Stopped(f"{signal_name(signum)}: stopped after update {done} of "
                              f"{args.num_steps}, checkpoint saved in {snapshot_dir}; rerun the "
                              "same command to resume", 128 + signum)
    if writer is not None:
        writer.flush()
    distribute.barrier(strategy)
    if int(step.numpy()) < args.num_steps:
        log(f"stopped at update {int(step.numpy())} of {args.num_steps}: "
            f"{manager.latest_checkpoint}; rerun the same command to go on")
    else:
        log(f"finished: {manager.latest_checkpoint}")
    return 0


def main(recipe, argv=None, description=None):
    """Entry point of a training script: parse the flags, train."""
    args = build_parser(recipe, description).parse_args(argv)
    with cli.new_folder_removed_on_failure(args.snapshot_dir):
        return train(args, recipe)
