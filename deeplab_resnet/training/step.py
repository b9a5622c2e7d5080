"""The compiled update step: loss scaling and the `Trainer` (micro-batches, replicas).

An update leaves its results on the device (`UpdateStats`); the loop copies those of
several updates to the host at once (`read_all`, every `TrainConfig.log_every` updates),
so that updates queue up on a GPU without draining it in between.
"""

from typing import NamedTuple

import tensorflow as tf

from deeplab_resnet.runtime import distribute
from deeplab_resnet.model import geometry


class UpdateStats(NamedTuple):
    """What one update reports, as scalar tensors on the device until `read`.

    Attributes:
        loss: mean loss of the update's micro-batches over the global batch.
        accuracy: pixel accuracy over the update's valid pixels.
        ok: False when the loss, or without loss scaling the gradients, was
            not finite and nothing was applied.
        loss_scale: the float16 loss scale after the update, or None.
        skipped: with loss scaling, whether the gradients overflowed and the
            update was skipped (else None).
    """
    loss: tf.Tensor
    accuracy: tf.Tensor
    ok: tf.Tensor
    loss_scale: tf.Tensor | None = None
    skipped: tf.Tensor | None = None

    def read(self):
        """The same fields as Python numbers (`ok` a bool), copied to the host in one read."""
        return read_all([self])[0]


def read_all(stats):
    """The `UpdateStats` of several updates as Python numbers, copied to the host in one read."""
    if not stats:
        return []
    rows = [tf.stack([tf.cast(value, tf.float32) for value in s if value is not None])
            for s in stats]
    return [_on_host(*values) for values in tf.stack(rows).numpy().tolist()]


def _on_host(loss, accuracy, ok, *scaling):
    if not scaling:
        return UpdateStats(loss, accuracy, bool(ok))
    return UpdateStats(loss, accuracy, bool(ok), scaling[0], bool(scaling[1]))


# The loss scale never goes below this: at 1 the gradients are the plain float16 ones.
MIN_LOSS_SCALE = 1.0


class LossScale(tf.Module):
    """Dynamic loss scaling for float16 training (checkpointed with the optimizer).

    The loss is multiplied by `scale` before differentiation and the
    gradients divided by it, so that small float16 gradients do not flush
    to zero. An update whose gradients overflow (inf or nan) is skipped and
    the scale halved, but never below `MIN_LOSS_SCALE` (1); after
    `growth_interval` finite updates in a row the scale doubles. Updates that
    keep overflowing at scale 1 cannot be rescued by scaling: the training
    loop stops after `TrainConfig.max_skipped_updates` skipped in a row.

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
        scaled = self.scale * tf.where(finite, tf.where(grow, 2.0, 1.0), 0.5)
        self.scale.assign(tf.maximum(scaled, MIN_LOSS_SCALE))
        self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), good))


class Trainer:
    """The update step: gradients of one or more micro-batches, averaged, applied once.

    With one micro-batch the gradient goes straight into the optimizer; with
    more, the micro-batches run one after the other, their gradients summed
    (an update never spans a checkpoint, so nothing of it is saved), and the
    mean is applied. With one replica the whole update, every micro-batch (a
    `tf.while_loop`) and the optimizer step, is one tf.function. Under a
    strategy with several replicas each piece runs on every replica
    (`strategy.run`), one tf.function per micro-batch adding to accumulator
    variables and one applying their mean: TensorFlow 2.21 cannot sum over
    replicas inside a loop (MirroredStrategy's `merge_call`), and the
    micro-batches unrolled into one function paired their cross-replica sums
    wrongly (measured on two logical CPUs: "Shape mismatch in the collective
    instance"). The gradients are summed over replicas just before the
    optimizer, which then makes the same update on every replica. Each
    function is traced once (per micro-batch count); `jit` compiles the
    per-replica functions with XLA.

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
        # No AutoGraph conversion (the conditional and the loop are explicit tf.cond and
        # tf.while_loop): traced without it, the first update comes seconds sooner (as
        # `predict.Predictor`).
        self._update = self._on_replicas(self._replica_update, jit)
        self._accumulate = self._on_replicas(self._accumulate_step, jit)
        self._apply_mean = self._on_replicas(self._apply_accumulated, jit)
        self.predict = tf.function(self._predict, autograph=False)

    def _on_replicas(self, fn, jit):
        """A tf.function running `fn` on every replica; returns the first local replica's result.

        The results of the step functions are sums over replicas, the same on each.
        """
        replica_fn = tf.function(fn, jit_compile=jit, autograph=False)

        @tf.function(autograph=False)
        def run(*args):
            results = self.strategy.run(replica_fn, args=args)
            return tf.nest.map_structure(
                lambda value: self.strategy.experimental_local_results(value)[0], results)
        return run

    def _gradients(self, images, labels):
        """Gradients of this replica's loss share (times the loss scale, if any) and the
        loss, correct and valid pixels summed over replicas (a [3] tensor)."""
        with tf.GradientTape() as tape:
            loss, hits, pixels = self.objective(images, labels, training=True)
            scaled = loss if self.loss_scale is None else loss * self.loss_scale.scale
        grads = tape.gradient(scaled, self.variables)
        return grads, distribute.sum_over_replicas(tf.stack([loss, hits, pixels]))

    def _apply(self, grads, learning_rate, sums, count):
        """Sums `grads` over replicas and applies them unless they or the loss are not finite.

        Args:
            sums: (loss, correct, valid pixels) summed over the `count` micro-batches.
        Returns:
            the `UpdateStats`: ok False when training must stop (the loss, or without
            loss scaling the gradients, not finite); with loss scaling, overflowing
            gradients only skip this update (skipped True) and halve the scale.
        """
        loss, hits, pixels = tf.unstack(sums)
        loss = loss / count
        loss_finite = tf.math.is_finite(loss)
        grads = distribute.sum_over_replicas(grads)
        if self.loss_scale is not None:
            grads = [g / self.loss_scale.scale for g in grads]
        finite = tf.math.is_finite(tf.linalg.global_norm(grads))
        tf.cond(loss_finite & finite,
                lambda: self.optimizer.apply(list(zip(self.names, grads, self.variables)),
                                             learning_rate),
                lambda: None)
        accuracy = hits / tf.maximum(pixels, 1.0)
        if self.loss_scale is None:
            return UpdateStats(loss, accuracy, loss_finite & finite)
        self.loss_scale.update(finite)
        return UpdateStats(loss, accuracy, loss_finite, self.loss_scale.scale.read_value(),
                           tf.logical_not(finite))

    def _replica_update(self, images, labels, learning_rate):
        """One whole update on this replica: every micro-batch (a `tf.while_loop` when there
        are several), then the mean gradient applied."""
        count = images.shape[0]
        if count == 1:
            grads, sums = self._gradients(images[0], labels[0])
            return self._apply(grads, learning_rate, sums, 1)

        def body(i, grads, sums):
            more, these = self._gradients(images[i], labels[i])
            return i + 1, [g + m for g, m in zip(grads, more)], sums + these

        _, grads, sums = tf.while_loop(
            lambda i, *_: i < count, body,
            (tf.constant(0), [tf.zeros(v.shape, v.dtype) for v in self.variables],
             tf.zeros([3])), parallel_iterations=1)
        return self._apply([g / count for g in grads], learning_rate, sums, count)

    def _accumulate_step(self, images, labels, index):
        grads, sums = self._gradients(images[index], labels[index])
        for acc, grad in zip(self._accumulators, grads):
            acc.assign_add(grad)
        return sums

    def _apply_accumulated(self, learning_rate, sums, count):
        stats = self._apply([acc / count for acc in self._accumulators], learning_rate, sums,
                            count)
        for acc in self._accumulators:
            acc.assign(tf.zeros_like(acc))
        return stats

    def step(self, images, labels, learning_rate):
        """One update from N micro-batches, without waiting for it (no host read).

        Args:
            images: [N, B, H, W, 3] crops (per replica: a distributed value of
                `ImageReader.batches`, or one tensor).
            labels: [N, B, H, W] labels, likewise.
            learning_rate: float.
        Returns:
            `UpdateStats` of the global batch, on the device (with loss
            scaling, an overflow skips the update and leaves `ok` True).
        """
        learning_rate = tf.constant(learning_rate, tf.float32)
        count = int(self.strategy.experimental_local_results(images)[0].shape[0])
        if count == 1 or self.strategy.num_replicas_in_sync == 1:
            return self._update(images, labels, learning_rate)
        if self._accumulators is None:
            with self.strategy.scope():
                self._accumulators = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                                      for v in self.variables]
        sums = tf.add_n([self._accumulate(images, labels, tf.constant(i))
                         for i in range(count)])
        return self._apply_mean(learning_rate, sums, tf.constant(count, tf.float32))

    def _predict(self, images):
        """Class map at the input size (pixel p reads logit p/8, as at test time) for summaries."""
        logits = self.objective.logits(images, training=False)
        resized = geometry.logits_to_image(logits, geometry.spatial_size(images))
        return tf.argmax(resized, -1, output_type=tf.int32)
