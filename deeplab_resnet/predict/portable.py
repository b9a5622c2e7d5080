"""The prediction graph in the ops every converter maps one to one: for LiteRT and ONNX exports.

`Predictor` computes DeepLab's geometry with gathers at exact rational positions and pads
pool1 with -inf; converters either reject such graphs (int8 cannot hold -inf) or re-read
them with their own conventions. This graph says what it means with plain ops:

* pool1 (Caffe's 3x3 / stride 2 / pad 1, ceil mode) follows conv1's ReLU, so its input is
  >= 0 and padding with zeros is padding with -inf; a fixed pad of 1 before and 2 after
  gives Caffe's ceil-mode windows at every size, then a VALID max pool.
* convolutions: explicit zero pads and VALID convolutions (dilated where Caffe dilates).
* ASPP head: its four dilated convolutions summed pairwise (ADD, which every runtime
  quantizes; not ADD_N).
* logits to image (`geometry.logits_to_image`: pixel p reads logit p/8, clamped at the last
  logit) is a bilinear resize of the h x w logits to 8h x 8w with neither align-corners nor
  half-pixel centres (ONNX's "asymmetric" coordinates: output p reads input p * h / 8h =
  p/8 exactly, clamped), cropped to the image.
* MSC inputs and logits: bilinear resizes with align corners (Caffe Interp's geometry).

The labels are the argmax of the resized logits (that of the probabilities, without their
rounding) unless `flip` averages two probability maps.
"""

import numpy as np
import tensorflow as tf

from deeplab_resnet.errors import SettingError
from deeplab_resnet.model import geometry
from deeplab_resnet.predict.prediction import network_input

STRIDE = geometry.OUTPUT_STRIDE


def _resize(values, size, align_corners):
    """Bilinear NHWC resize with a convention stated once (no half-pixel centres)."""
    return tf.raw_ops.ResizeBilinear(images=values, size=tf.cast(tf.stack(size), tf.int32),
                                     align_corners=align_corners, half_pixel_centers=False)


def logits_to_image(logits, size):
    """`geometry.logits_to_image` as one asymmetric bilinear resize and a crop."""
    shape = tf.shape(logits)
    zoomed = _resize(logits, [shape[1] * STRIDE, shape[2] * STRIDE], align_corners=False)
    return zoomed[:, :size[0], :size[1], :]


class PortableNetwork(tf.Module):
    """The BN-folded network (`fused.FusedDeepLab`'s float32 kernels) in converter-plain ops.

    Args:
        fused: a `fused.FusedDeepLab` computing in float32.
    Raises:
        SettingError for a network this graph cannot state: "format" for a pool other than
        DeepLab's pool1 after a ReLU, "precision" for a reduced precision.
    """

    def __init__(self, fused, name=None):
        super().__init__(name=name or "portable_network")
        arch = fused.arch
        pool = arch.pool
        if (pool.kernel, pool.stride, pool.pad) != (3, 2, 1) or not arch.stem.relu:
            raise SettingError("{format}: only DeepLab's pool1 (3x3, stride 2, pad 1, after a "
                               "ReLU) can be exported to LiteRT or ONNX", "format")
        if fused.compute_dtype != tf.float32:
            raise SettingError("{precision}: LiteRT and ONNX exports compute in fp32 (use "
                               "--quantize for fp16 or int8 LiteRT)", "precision")
        self.arch = arch
        # numpy, made constants of the graph where traced (not captured inputs, which
        # tf2onnx would make inputs of the ONNX graph).
        self.kernels = {name: (np.asarray(w, np.float32), np.asarray(b, np.float32))
                        for name, (w, b) in fused.kernels.items()}

    def _conv(self, x, conv):
        w, b = (tf.constant(k) for k in self.kernels[conv.name])
        if conv.pad:
            x = tf.pad(x, [[0, 0], [conv.pad, conv.pad], [conv.pad, conv.pad], [0, 0]])
        y = tf.nn.conv2d(x, w, strides=conv.stride, padding="VALID", dilations=conv.dilation)
        y = tf.nn.bias_add(y, b)
        return tf.nn.relu(y) if conv.relu else y

    @staticmethod
    def _pool(x, pool):
        # Input >= 0 (after ReLU): zero padding never wins; 1 before, 2 after = ceil mode.
        x = tf.pad(x, [[0, 0], [1, 2], [1, 2], [0, 0]])
        return tf.nn.max_pool2d(x, 3, 2, "VALID")

    @staticmethod
    def _join(block, shortcut, branch):
        return tf.nn.relu(tf.add(branch, shortcut))

    @staticmethod
    def _join_head(outputs):
        total = outputs[0]
        for output in outputs[1:]:
            total = tf.add(total, output)
        return total

    def __call__(self, images):
        """float32 logits of preprocessed NHWC float32 images."""
        from deeplab_resnet.model import arch as arch_lib
        return arch_lib.run(self.arch, images, conv=self._conv, pool=self._pool,
                            join=self._join, join_head=self._join_head)


class PortableGraph(tf.Module):
    """Image values (float32 0-255, RGB, [N, H, W, 3]) -> logits, probabilities and labels,
    with the test protocol of a `Predictor` (scales, flip, DeepLab's padding).

    Args:
        predictor: a `prediction.Predictor` whose model is a float32 `FusedDeepLab`.
    """

    def __init__(self, predictor, name=None):
        super().__init__(name=name or "portable_graph")
        self.network = PortableNetwork(predictor.model)
        self.scales = predictor.scales
        self.flip = predictor.flip
        self.deeplab_protocol = predictor.deeplab_protocol
        self.pad_size = predictor.pad_size

    def _logits(self, images):
        if self.scales == (1.0,):
            return self.network(images)
        h, w = geometry.spatial_size(images)
        fused = None
        for scale in self.scales:
            size = [geometry.msc_input_size(h, scale), geometry.msc_input_size(w, scale)]
            logits = self.network(images if scale == 1.0 else _resize(images, size, True))
            if fused is None:
                fused, target = logits, tf.shape(logits)[1:3]
            else:
                fused = tf.maximum(fused, _resize(logits, [target[0], target[1]], True))
        return fused

    def _resized(self, values):
        """(network logits, logits resized to the image) for 0-255 RGB NHWC values."""
        images, h, w = network_input(values, self.deeplab_protocol, self.pad_size)
        logits = self._logits(images)
        return logits, logits_to_image(logits, [h, w])

    def __call__(self, values):
        """{"labels": int32 [N,H,W], "probabilities": float32 [N,H,W,C], "logits": [N,h,w,C]}."""
        logits, resized = self._resized(values)
        probabilities = tf.nn.softmax(resized, axis=-1)
        if self.flip:
            _, mirrored = self._resized(tf.reverse(values, axis=[2]))
            probabilities = (probabilities + tf.reverse(tf.nn.softmax(mirrored, axis=-1),
                                                        axis=[2])) / 2.0
            labels = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        else:
            labels = tf.argmax(resized, axis=-1, output_type=tf.int32)
        return {"labels": labels, "probabilities": probabilities, "logits": logits}
