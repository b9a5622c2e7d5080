"""Multi-scale wrapper: one shared network over several input scales, fused by max."""

import tensorflow as tf

from deeplab_resnet.model import geometry


class MultiScale(tf.Module):
    """Runs `model` on the input resized to each scale and fuses the logits, as DeepLab's MSC net.

    The input at scale s is (in-1)*s + 1 pixels per side (321 -> 241, 161),
    resized bilinearly with align corners; the logits at the other scales are
    zoomed with align corners to the size of the first scale's logits and
    fused by element-wise max (`geometry`).

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
        h, w = geometry.spatial_size(images)
        outputs = []
        for scale in self.scales:
            size = [geometry.msc_input_size(h, scale), geometry.msc_input_size(w, scale)]
            scaled = images if scale == 1.0 else geometry.resize_align_corners(images, size)
            outputs.append(self.model(scaled, training=training))
        fused = outputs[0]
        target = geometry.spatial_size(fused)
        for logits in outputs[1:]:
            zoomed = geometry.resize_align_corners(logits, target)
            fused = tf.maximum(fused, tf.cast(zoomed, fused.dtype))
        return fused, outputs
