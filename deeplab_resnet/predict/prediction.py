"""One image -> class probabilities and labels: the one prediction path of the project.

RGB image -> `model.preprocess` -> network (one scale, or several fused by max
through `msc.MultiScale`) -> logits resized to the image -> softmax ->
(mirrored image averaged in) -> optional dense CRF -> argmax. `Segmenter`,
evaluate.py, inference.py and export.py all go through `Predictor`; `prefetch`
decodes the next images while the network runs. The network may compute
in bfloat16 or float16 (`--precision`); its logits are float32, and so is
everything after them.

Both protocols resize logits to the image with DeepLab's geometry: image pixel
p reads logit position p/8 (bilinear, `geometry.logits_to_image`), where logit
i's receptive field is centred.

* full (default): the image goes through the network at its own size.
* DeepLab's (`deeplab_protocol=True`, behind the paper's numbers): the
  preprocessed image is padded at the bottom/right with 0 (the mean colour) to
  `pad_size` x `pad_size` (513) first; reading the logits at p/8 is then
  DeepLab's align-corners zoom x8 ((n - 1) * 8 + 1, 65 -> 513) cropped back to
  the image. A larger image, or a pad size not of the form 8k + 1, is padded
  up to the next 8k + 1 so that the zoomed logits cover the padded image.
"""

import collections
import concurrent.futures
import itertools
import weakref

import numpy as np
import tensorflow as tf

# Prediction is this module's too: the one prediction path's result (see the README).
from deeplab_resnet.predict.host import HostSide, Prediction, checked_image  # noqa: F401
from deeplab_resnet import defaults
from deeplab_resnet.model import geometry
from deeplab_resnet.model import network as model_lib
from deeplab_resnet.model import msc
from deeplab_resnet.runtime import precision as precision_lib
from deeplab_resnet.model.fused import FusedDeepLab
from deeplab_resnet.predict.config import PredictConfig

# Under bf16/fp16 the ASPP head computes in float32 on the reduced-precision
# features (see benchmarks/RESULTS.md for what it costs and buys).
FLOAT32_HEAD = True
IMAGE_SPEC = tf.TensorSpec([None, None, 3], tf.uint8, name="image")
BATCH_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
# The prediction functions hold no control flow on tensors; without AutoGraph's
# conversion of every function they call, the first trace is several times faster
# (benchmarks/RESULTS.md, start-up).
AUTOGRAPH = False
# Predictor -> its batched tf.function (`Predictor.forward_batch`).
_BATCH_FUNCTIONS = weakref.WeakKeyDictionary()

def padded_size(size, pad_size):
    """Side of the padded input under DeepLab's protocol (python int or int32 tensor).

    Args:
        size: image height or width.
        pad_size: the requested side (513 for VOC).
    Returns:
        the smallest 8k + 1 that is at least max(size, pad_size); an input of
        8k + 1 gives k + 1 logits, whose x8 align-corners zoom is 8k + 1 again.
    """
    target = tf.maximum(size, pad_size) if tf.is_tensor(size) else max(size, pad_size)
    stride = geometry.OUTPUT_STRIDE
    return (target - 1 + stride - 1) // stride * stride + 1


def network_input(values, deeplab_protocol, pad_size):
    """(the network's input, image height, image width) for 0-255 RGB NHWC `values`:
    preprocessed and, under DeepLab's protocol, padded to `padded_size` at the bottom/right."""
    images = model_lib.preprocess(values)
    h, w = tf.shape(values)[1], tf.shape(values)[2]
    if deeplab_protocol:
        ph, pw = padded_size(h, pad_size), padded_size(w, pad_size)
        # Zero after preprocessing is the mean colour, DeepLab's padding value.
        images = tf.pad(images, [[0, 0], [0, ph - h], [0, pw - w], [0, 0]])
    return images, h, w


class Predictor(HostSide, tf.Module):
    """Image -> probabilities/labels for one model and one test protocol.

    The network part runs in one `tf.function` with a [None, None, 3] uint8
    signature, so images of any size share one trace (no retracing per size).

    Args:
        model: a DeepLabResNet (or any callable preprocessed NHWC -> logits).
        scales: input scales; more than one fuses the logits by max (MSC).
        flip: also run the mirrored image and average the two probability maps.
        deeplab_protocol: pad the image to `pad_size` before the network
            (see the module docstring).
        pad_size: padded side for `deeplab_protocol`.
        crf: a `crf.CRFParams` to refine probabilities with a dense CRF, or None.

    Example:
        >>> predictor = Predictor(DeepLabResNet("tiny", 3), scales=(1.0, 0.5), flip=True)
        >>> prediction = predictor(np.zeros((50, 60, 3), np.uint8))
        >>> prediction.labels.shape, prediction.probabilities.shape
        ((50, 60), (50, 60, 3))
    """

    def __init__(self, model, scales=(1.0,), flip=False, deeplab_protocol=False,
                 pad_size=defaults.PAD_SIZE, crf=None, name=None):
        super().__init__(name=name or "predictor")
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.multi_scale = msc.MultiScale(model, self.scales) if self.scales != (1.0,) else None
        self.flip = bool(flip)
        self.deeplab_protocol = bool(deeplab_protocol)
        self.pad_size = int(pad_size)
        self.crf = crf

    def _network(self, images):
        if self.multi_scale is not None:
            return self.multi_scale(images)[0]
        return self.model(images)

    def _probabilities(self, batch):
        """(raw logits [N,h',w',C], probabilities [N,H,W,C]) for uint8 NxHxWx3 images."""
        images, h, w = network_input(batch, self.deeplab_protocol, self.pad_size)
        logits = self._network(images)
        resized = geometry.logits_to_image(logits, [h, w])
        return logits, tf.nn.softmax(tf.cast(resized, tf.float32), axis=-1)

    def _batch(self, images):
        logits, probabilities = self._probabilities(images)
        if self.flip:
            _, mirrored = self._probabilities(images[:, :, ::-1])
            probabilities = (probabilities + mirrored[:, :, ::-1]) / 2.0
        return logits, probabilities

    @tf.function(input_signature=[IMAGE_SPEC], autograph=AUTOGRAPH)
    def forward(self, image):
        """Raw logits [h',w',C] and probabilities [H,W,C] (no CRF) for one image.

        Args:
            image: HxWx3 uint8 RGB tensor, any size.
        """
        logits, probabilities = self._batch(image[tf.newaxis])
        return logits[0], probabilities[0]

    def forward_batch(self, images):
        """`forward` of N images of one size at once: logits [N,h',w',C], probabilities
        [N,H,W,C]. One trace for every size; kept out of the Module's attributes, so that a
        SavedModel of the predictor holds what it held before batches (`export`).

        Args:
            images: NxHxWx3 uint8 RGB tensor.
        """
        function = _BATCH_FUNCTIONS.get(self)
        if function is None:
            function = tf.function(self._batch, input_signature=[BATCH_SPEC],
                                   autograph=AUTOGRAPH)
            _BATCH_FUNCTIONS[self] = function
        return function(images)

    def probabilities_many(self, images):
        """[(logits, probabilities)] (numpy, no CRF) of HxWx3 uint8 images of one size, run
        through the network together."""
        if len(images) == 1:
            logits, probabilities = self.forward(tf.constant(checked_image(images[0])))
            return [(logits.numpy(), probabilities.numpy())]
        logits, probabilities = self.forward_batch(
            tf.constant(np.stack([checked_image(image) for image in images])))
        return list(zip(logits.numpy(), probabilities.numpy()))

    @tf.function(input_signature=[IMAGE_SPEC], autograph=AUTOGRAPH)
    def serve(self, image):
        """Serving signature: class-index map [H,W] int32 and probabilities [H,W,C] float32.

        Args:
            image: HxWx3 uint8 RGB tensor, any size.
        """
        _, probabilities = self.forward(image)
        return {"labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
                "probabilities": probabilities}

    @tf.function(input_signature=[IMAGE_SPEC], autograph=AUTOGRAPH)
    def labels(self, image):
        """Class-index map [H,W] int32 alone (no CRF): the argmax runs where the network ran,
        so only H x W int32 values reach the host, not H x W x C probabilities.

        Args:
            image: HxWx3 uint8 RGB tensor, any size.
        """
        _, probabilities = self.forward(image)
        return tf.argmax(probabilities, axis=-1, output_type=tf.int32)

    def outputs_many(self, images):
        """[(logits, probabilities)] (numpy, no CRF) of HxWx3 uint8 images of one size."""
        return self.probabilities_many(images)

    def _labels_many(self, images):
        if len(images) == 1:  # the argmax where the network ran: only labels reach the host
            return [self.labels(tf.constant(checked_image(images[0]))).numpy()]
        return super()._labels_many(images)


def make_predictor(model, config=PredictConfig()):
    """A Predictor of a loaded model for a test protocol (`config`'s).

    The network runs in its inference form, BatchNorm folded into the
    convolutions (`fused.FusedDeepLab`): same outputs, fewer passes; in the
    `precision` this hardware runs natively (`precision.resolve`), with the
    ASPP head in float32 under a reduced precision.

    Args:
        model: the loaded DeepLabResNet.
        config: a `PredictConfig` (its protocol and precision are used here; the
            network is `model`).
    """
    network = FusedDeepLab(model, precision_lib.resolve(config.precision),
                           float32_head=FLOAT32_HEAD)
    predictor = Predictor(network, scales=config.scales, flip=config.flip,
                          deeplab_protocol=config.deeplab_protocol, pad_size=config.pad_size,
                          crf=config.crf_params)
    return predictor.tile(config.tile, config.tile_overlap)


# Images decoded ahead of the network: enough to hide decoding behind compute,
# few enough to hold little memory.
PREFETCH_DEPTH = 2


def prefetch(read, items, depth=PREFETCH_DEPTH):
    """Yields `read(item)` for each item, in order, reading up to `depth` items ahead.

    The reads run in one background thread (image decoding releases the GIL),
    so reading the next images overlaps the prediction of the current one. A
    read that fails raises when its result is reached, after every earlier
    item was yielded, as a plain loop would.

    Args:
        read: item -> value, e.g. `utils.read_image`.
        items: any iterable; it is consumed lazily, in the caller's thread.
        depth: how many reads may run ahead of the consumer (>= 1).

    Example:
        >>> for image in prefetch(utils.read_image, ["a.jpg", "b.jpg"]):
        ...     labels = predictor(image).labels
    """
    items = iter(items)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                               thread_name_prefix="deeplab-read") as pool:
        pending = collections.deque(pool.submit(read, item)
                                    for item in itertools.islice(items, max(1, depth)))
        try:
            while pending:
                value = pending.popleft().result()
                pending.extend(pool.submit(read, item) for item in itertools.islice(items, 1))
                yield value
        finally:  # the consumer stopped early or a read failed: drop what is queued
            for future in pending:
                future.cancel()
