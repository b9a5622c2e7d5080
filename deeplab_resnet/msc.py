"""Multi-scale wrapper: one shared network over several input scales, fused by max."""

import tensorflow as tf


def scaled_size(size, scale):
    """Input size at `scale`, as DeepLab's multi-scale nets compute it: int(s * size)."""
    return max(1, int(scale * size))


class MultiScale(tf.Module):
    """Runs `model` on the input resized to each scale and fuses the logits.

    The outputs at the other scales are resized bilinearly to the size of the
    first scale's output and fused by element-wise max, as in DeepLab's MSC
    training.

    Args:
        model: a callable `model(images, training=...) -> logits`.
        scales: the scales, the first being the reference (usually 1.0).

    Example:
        >>> msc = MultiScale(DeepLabResNet("tiny", 3), (1.0, 0.75, 0.5))
        >>> fused, per_scale = msc(images)
    """

    def __init__(self, model, scales=(1.0, 0.75, 0.5), name=None):
        super().__init__(name=name or "multi_scale")
        if not scales:
            raise ValueError("at least one scale is needed")
        self.model = model
        self.scales = tuple(float(s) for s in scales)

    def __call__(self, images, training=False):
        """Returns (fused logits, [logits at each scale])."""
        h, w = images.shape[1], images.shape[2]
        if h is None or w is None:
            shape = tf.shape(images)
            h, w = shape[1], shape[2]
        outputs = []
        for scale in self.scales:
            if scale == 1.0:
                scaled = images
            else:
                size = self._size(h, w, scale)
                # tf.image.resize returns float32: keep the input's (mixed-precision) dtype.
                scaled = tf.cast(tf.image.resize(images, size, method="bilinear"), images.dtype)
            outputs.append(self.model(scaled, training=training))
        reference = outputs[0]
        target = tf.shape(reference)[1:3]
        fused = reference
        for logits in outputs[1:]:
            fused = tf.maximum(fused, tf.cast(tf.image.resize(logits, target, method="bilinear"),
                                              fused.dtype))
        return fused, outputs

    @staticmethod
    def _size(h, w, scale):
        if isinstance(h, int) and isinstance(w, int):
            return [scaled_size(h, scale), scaled_size(w, scale)]
        hs = tf.maximum(1, tf.cast(tf.cast(h, tf.float32) * scale, tf.int32))
        ws = tf.maximum(1, tf.cast(tf.cast(w, tf.float32) * scale, tf.int32))
        return tf.stack([hs, ws])
