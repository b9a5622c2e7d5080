"""TensorBoard summaries of training: scalars and image | label | prediction strips."""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from deeplab_resnet import defaults
from deeplab_resnet.model.network import IMG_MEAN
from deeplab_resnet.data.palette import colorize


def image_strips(images, labels, predictions, ignore_label, count, palette=None):
    """image | label | prediction strips as uint8 [count, H, 3W, 3], in `palette`'s colours
    (256x3; default VOC's)."""
    rgb = np.clip(images[:count] + IMG_MEAN, 0, 255)[..., ::-1].astype(np.uint8)

    def paint(values):
        # Ignored pixels take the palette's last colour, as VOC draws its borders.
        values = np.where(values == ignore_label, 255, np.clip(values, 0, 255))
        return colorize(values, palette)

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


def write_image_summary(trainer, images, labels, count, step,
                        ignore_label=defaults.IGNORE_LABEL, palette=None):
    """image | label | prediction strips of the first `count` crops of the first
    micro-batch (of this worker's first replica), in `palette`'s colours."""
    images, labels = (trainer.strategy.experimental_local_results(t)[0][0]
                      for t in (images, labels))
    shown = images[:count]
    strips = image_strips(shown.numpy(), labels.numpy(), trainer.predict(shown).numpy(),
                          ignore_label, count, palette)
    write_images("image_label_prediction", strips, step)
