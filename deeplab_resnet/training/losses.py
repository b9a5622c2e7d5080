"""Training losses: softmax cross-entropy at logit resolution, single- or multi-scale."""

import tensorflow as tf

from deeplab_resnet.runtime import distribute
from deeplab_resnet.model import geometry
from deeplab_resnet.model.msc import MultiScale


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
