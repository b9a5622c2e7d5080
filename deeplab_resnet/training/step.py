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
    more, the micro-batches run one after the other in a `tf.while_loop` whose
    running sums are the accumulated gradients (an update never spans a
    checkpoint, so nothing of it is saved), and their mean is applied. The
    whole update, every micro-batch and the optimizer step, is one tf.function
    (traced once per micro-batch count; `jit` compiles it with XLA). Under a
    strategy it runs on every replica (`strategy.run`); the gradients are
    summed over replicas just before the optimizer, which then makes the same
    update on every replica.

    Args:
        objective: an `Objective`.
        optimizer: `CaffeSGD` or `Adam`.
        variables: {name: variable} to train (the optimizer's keys).
        jit: compile the step function with XLA.
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
        # No AutoGraph conversion (the conditional and the loop are explicit tf.cond and
        # tf.while_loop): traced without it, the first update comes seconds sooner (as
        # `predict.Predictor`).
        replica_update = tf.function(self._replica_update, jit_compile=jit, autograph=False)

        @tf.function(autograph=False)
        def update(images, labels, learning_rate):
            results = self.strategy.run(replica_update, args=(images, labels, learning_rate))
            # The results are sums over replicas, the same on each: the first local one.
            return tf.nest.map_structure(
                lambda value: self.strategy.experimental_local_results(value)[0], results)

        self._update = update
        self.predict = tf.function(self._predict, autograph=False)

    def _gradients(self, images, labels):
        """Gradients of this replica's loss share (times the loss scale, if any) and the
        loss, correct and valid pixels summed over replicas."""
        with tf.GradientTape() as tape:
            loss, hits, pixels = self.objective(images, labels, training=True)
            scaled = loss if self.loss_scale is None else loss * self.loss_scale.scale
        grads = tape.gradient(scaled, self.variables)
        return grads, distribute.sum_over_replicas(tf.stack([loss, hits, pixels]))

    def _apply(self, grads, learning_rate, loss_finite):
        """Sums `grads` over replicas and applies them unless they or the loss are not finite.

        Returns:
            (ok, skipped): ok False when training must stop (the loss, or without
            loss scaling the gradients, not finite); with loss scaling, overflowing
            gradients only skip this update (skipped True) and halve the scale.
        """
        grads = distribute.sum_over_replicas(grads)
        if self.loss_scale is not None:
            grads = [g / self.loss_scale.scale for g in grads]
        finite = tf.math.is_finite(tf.linalg.global_norm(grads))
        tf.cond(loss_finite & finite,
                lambda: self.optimizer.apply(list(zip(self.names, grads, self.variables)),
                                             learning_rate),
                lambda: None)
        if self.loss_scale is None:
            return loss_finite & finite, tf.constant(False)
        self.loss_scale.update(finite)
        return loss_finite, tf.logical_not(finite)

    def _accumulated(self, images, labels):
        """The mean gradient of the micro-batches images[i], labels[i] (one after the other)
        and the sums over them of (loss, correct pixels, valid pixels)."""
        count = images.shape[0]
        if count == 1:
            return self._gradients(images[0], labels[0])

        def body(i, grads, sums):
            more, these = self._gradients(images[i], labels[i])
            return i + 1, [g + m for g, m in zip(grads, more)], sums + these

        zeros = [tf.zeros(v.shape, v.dtype) for v in self.variables]
        _, grads, sums = tf.while_loop(lambda i, *_: i < count, body,
                                       (tf.constant(0), zeros, tf.zeros([3])),
                                       parallel_iterations=1)
        return [g / count for g in grads], sums

    def _replica_update(self, images, labels, learning_rate):
        """One update on this replica: UpdateStats (sums over replicas)."""
        grads, sums = self._accumulated(images, labels)
        loss, hits, pixels = tf.unstack(sums)
        loss = loss / images.shape[0]
        ok, skipped = self._apply(grads, learning_rate, tf.math.is_finite(loss))
        accuracy = hits / tf.maximum(pixels, 1.0)
        if self.loss_scale is None:
            return UpdateStats(loss, accuracy, ok)
        return UpdateStats(loss, accuracy, ok, self.loss_scale.scale.read_value(), skipped)

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
        return self._update(images, labels, tf.constant(learning_rate, tf.float32))

    def _predict(self, images):
        """Class map at the input size (pixel p reads logit p/8, as at test time) for summaries."""
        logits = self.objective.logits(images, training=False)
        resized = geometry.logits_to_image(logits, geometry.spatial_size(images))
        return tf.argmax(resized, -1, output_type=tf.int32)
