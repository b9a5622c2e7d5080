"""Training losses: softmax cross-entropy at logit resolution, single- or multi-scale."""

import tensorflow as tf

from deeplab_resnet.runtime import distribute
from deeplab_resnet.model import geometry
from deeplab_resnet.model.msc import MultiScale


def _per_pixel(logits, labels, ignore_label):
    """At logit resolution: (per-pixel cross-entropy, valid mask, 1.0 at the valid pixels,
    1.0 where the argmax is the label, the shrunk labels with 0 at the invalid pixels)."""
    num_classes = logits.shape[-1]
    labels = geometry.shrink_labels(labels, geometry.spatial_size(logits))
    valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
    logits = tf.cast(logits, tf.float32)
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.where(valid, labels, 0), logits=logits)
    weight = tf.cast(valid, tf.float32)
    hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=labels.dtype), labels), tf.float32)
    return per_pixel, valid, weight, hits, tf.where(valid, labels, 0)


def cross_entropy_sums(logits, labels, ignore_label):
    """Softmax cross-entropy at logit resolution, summed over the valid pixels.

    Labels are shrunk to the logits as DeepLab does (`geometry.shrink_labels`:
    logit i takes the label at pixel i*(H-1)/(h-1)). Pixels equal to
    `ignore_label`, or outside [0, num_classes), contribute nothing (the 2017
    port kept only labels below the class count). Computed in float32.

    Returns:
        (summed loss, correctly classified valid pixels, valid pixels).
    """
    per_pixel, _, weight, hits, _ = _per_pixel(logits, labels, ignore_label)
    return tf.reduce_sum(per_pixel * weight), tf.reduce_sum(hits * weight), tf.reduce_sum(weight)


def hardest_threshold(per_pixel, valid, fraction):
    """The loss of the k-th hardest valid pixel of the global batch, k = ceil(fraction x valid
    pixels of all replicas) (at least 1): pixels at or above it are the hardest `fraction`.

    The per-pixel losses of every replica are gathered (`distribute.gather_over_replicas`),
    so each replica selects exactly the pixels one device would on the whole batch.
    """
    losses = tf.reshape(tf.where(valid, per_pixel, -1.0), [-1])  # cross-entropy is >= 0
    losses = distribute.gather_over_replicas(losses)
    count = tf.reduce_sum(tf.cast(losses >= 0.0, tf.int32))
    k = tf.cast(tf.math.ceil(fraction * tf.cast(count, tf.float32)), tf.int32)
    k = tf.clip_by_value(k, 1, tf.size(losses))
    # A sort, not top_k: k is not known when the step is compiled (XLA, `jit`).
    return tf.stop_gradient(tf.sort(losses, direction="DESCENDING")[k - 1])


def weighted_sums(logits, labels, ignore_label, class_weights=None, ohem_fraction=None):
    """`cross_entropy_sums` with class weights and/or bootstrapping (OHEM).

    Each valid pixel counts with its class's weight (default 1); with
    `ohem_fraction`, only the hardest fraction of the valid pixels of the global
    batch counts (`hardest_threshold`: all pixels at the threshold's loss count).

    Returns:
        (weighted loss sum, correct valid pixels, valid pixels, the sum of the weights
        of the pixels that count: the loss's normaliser once summed over replicas).
    """
    per_pixel, valid, weight, hits, labels = _per_pixel(logits, labels, ignore_label)
    counted = weight
    if ohem_fraction is not None:
        threshold = hardest_threshold(per_pixel, valid, ohem_fraction)
        counted = weight * tf.cast(per_pixel >= threshold, tf.float32)
    if class_weights is not None:
        table = tf.constant(class_weights, tf.float32)
        counted = counted * tf.gather(table, labels)
    return (tf.reduce_sum(per_pixel * counted), tf.reduce_sum(hits * weight),
            tf.reduce_sum(weight), tf.reduce_sum(counted))


class Objective:
    """Forward pass and loss: one scale, or MSC (fused + every scale).

    Args:
        model: the DeepLabResNet.
        ignore_label: label value not scored.
        scales: None for single-scale; else the MSC scales, the first the reference.
        compute_dtype: dtype the network computes in (images are cast to it);
            the loss is float32 either way.
        class_weights: one loss weight per class, or None (all 1).
        ohem_fraction: count only the hardest fraction of the valid pixels of each
            global batch (bootstrapped cross-entropy), or None (all).

    Without class weights and OHEM the loss is Caffe's, computed as it always was.
    """

    def __init__(self, model, ignore_label, scales=None, compute_dtype=tf.float32,
                 class_weights=None, ohem_fraction=None):
        self.model = model
        self.ignore_label = ignore_label
        self.msc = MultiScale(model, scales) if scales is not None else None
        self.compute_dtype = compute_dtype
        self.class_weights = None if class_weights is None else tuple(map(float, class_weights))
        self.ohem_fraction = None if ohem_fraction is None else float(ohem_fraction)

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
        the global batch; with one replica, the mini-batch's mean. With class
        weights or OHEM, each term is the weighted mean over the pixels that count:
        divided by the sum of their weights over the global batch.
        """
        images = tf.cast(images, self.compute_dtype)
        if self.msc is None:
            outputs = [self.model(images, training=training)]
        else:
            fused, per_scale = self.msc(images, training=training)
            outputs = [fused] + list(per_scale)
        if self.class_weights is not None or self.ohem_fraction is not None:
            return self._weighted(outputs, labels)
        terms = [cross_entropy_sums(out, labels, self.ignore_label) for out in outputs]
        counts = distribute.sum_over_replicas(tf.stack([count for _, _, count in terms]))
        loss = tf.add_n([total / tf.maximum(counts[i], 1.0)
                         for i, (total, _, _) in enumerate(terms)])
        return loss, terms[0][1], terms[0][2]

    def _weighted(self, outputs, labels):
        """`__call__` with class weights and/or OHEM: each term normalised by its counted
        pixels' weights summed over the global batch."""
        terms = [weighted_sums(out, labels, self.ignore_label, self.class_weights,
                               self.ohem_fraction) for out in outputs]
        norms = distribute.sum_over_replicas(tf.stack([norm for *_, norm in terms]))
        loss = tf.add_n([total / tf.where(norms[i] > 0.0, norms[i], 1.0)
                         for i, (total, *_) in enumerate(terms)])
        return loss, terms[0][1], terms[0][2]
