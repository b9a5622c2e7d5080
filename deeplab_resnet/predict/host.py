"""The host side of prediction, shared by the TensorFlow, LiteRT and ONNX Runtime predictors:
`Prediction`, and `HostSide` (dense CRF, argmax, tiles, batches)."""

import collections

import numpy as np

from deeplab_resnet.predict import crf as crf_lib

Prediction = collections.namedtuple("Prediction", "labels probabilities logits")
Prediction.__doc__ = """What `Segmenter.predict` (and `Predictor`) returns for one image.

Attributes:
    labels: HxW int32 class indices.
    probabilities: HxWxC float32 class probabilities (after CRF when enabled).
    logits: h'xw'xC float32 raw network output for the (unmirrored) image,
        before any resizing: the model's output size for the input (for
        several scales, the fused output at the first scale's size; with the
        DeepLab protocol, the output for the padded image).

Example:
    >>> prediction = deeplab_resnet.Segmenter.load("ckpt/voc12").predict("photo.jpg")
    >>> labels, probabilities, logits = prediction     # a named tuple
    >>> bool((probabilities.argmax(-1) == labels).all())
    True
"""


def checked_image(image):
    """`image` as an array; a ValueError unless it is HxWx3 uint8."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    return image


def batches(items, batch_size, shape=lambda item: item.shape):
    """Yields lists of up to `batch_size` consecutive items of one `shape(item)`, in order (an
    item whose shape is None is a batch of its own)."""
    batch = []
    for item in items:
        if batch and (shape(item) is None or shape(item) != shape(batch[0])):
            yield batch
            batch = []
        batch.append(item)
        if len(batch) == batch_size or shape(item) is None:
            yield batch
            batch = []
    if batch:
        yield batch


class HostSide:
    """What follows the network, shared by every predictor (TensorFlow, LiteRT, ONNX Runtime):
    the dense CRF, the argmax, tiles (`tiling.Tiler`) and batches.

    A subclass gives `outputs_many(images)`: [(logits, probabilities)] as numpy arrays (no
    CRF) for a list of HxWx3 uint8 images of one size, and sets `crf` (a `crf.CRFParams`
    or None) and `tiler` (a `tiling.Tiler` or None).
    """

    crf = None
    tiler = None

    def outputs_many(self, images):
        raise NotImplementedError

    def _labels_many(self, images):
        """HxW int32 labels (no CRF) of images of one size."""
        return [probabilities.argmax(axis=-1).astype(np.int32)
                for _, probabilities in self.outputs_many(images)]

    def _tiled(self, image):
        return self.tiler is not None and not self.tiler.covers(image)

    def tile(self, tile, overlap, batch_size=1):
        """Predicts images larger than `tile` (H, W) by overlapping tiles (`tiling.Tiler`);
        None: whole. Returns self."""
        from deeplab_resnet.predict import tiling
        self.tiler = None if tile is None else tiling.Tiler(
            lambda tiles: [p for _, p in self.outputs_many(tiles)], tile, overlap, batch_size)
        return self

    def predict_labels(self, image):
        """HxW int32 class indices of one image, equal to `self(image).labels`.

        Without a CRF only the labels are copied to the host where the network runs on a
        device; with one, the probabilities are needed there and `__call__` runs.

        Args:
            image: HxWx3 uint8 array.
        Example:
            >>> predictor = Predictor(DeepLabResNet("tiny", 3))
            >>> predictor.predict_labels(np.zeros((50, 60, 3), np.uint8)).shape
            (50, 60)
        """
        return self.labels_many([image])[0]

    def labels_many(self, images):
        """`predict_labels` of several HxWx3 uint8 images of one size, run together."""
        images = [checked_image(image) for image in images]
        if self.crf is not None:
            return [prediction.labels for prediction in self.predict_many(images)]
        if self._tiled(images[0]):
            return [self.tiler.labels(image) for image in images]
        return self._labels_many(images)

    def __call__(self, image):
        """Predicts one image.

        Args:
            image: HxWx3 uint8 array (e.g. from `data.images.read_image`).
        Returns:
            a Prediction (tiled: its `logits` are None, each tile having its own).
        """
        return self.predict_many([image])[0]

    def predict_many(self, images):
        """Predictions of several HxWx3 uint8 images of one size, run through the network
        together (equal to predicting them one at a time)."""
        images = [checked_image(image) for image in images]
        if self._tiled(images[0]):
            outputs = [(None, self.tiler.probabilities(image)) for image in images]
        else:
            outputs = self.outputs_many(images)
        predictions = []
        for image, (logits, probabilities) in zip(images, outputs):
            probabilities, labels = self._on_host(image, probabilities)
            logits = None if logits is None else np.asarray(logits, np.float32)
            predictions.append(Prediction(labels, probabilities, logits))
        return predictions

    def _on_host(self, image, probabilities):
        """(probabilities after the CRF when set, their argmax labels) of the network's."""
        if self.crf is not None:
            probabilities = crf_lib.refine(image, probabilities, self.crf)
        return probabilities, probabilities.argmax(axis=-1).astype(np.int32)

    def labels_later(self, image):
        """Runs the network on one image now; returns a function that completes its labels.

        The function does the work that follows the network on the host (the dense
        CRF, when set, and its argmax), so that a caller may run it in another thread
        while the network predicts the next image; `labels_later(image)()` equals
        `predict_labels(image)`.

        Args:
            image: HxWx3 uint8 array.
        Returns:
            a function of no arguments giving the HxW int32 class indices.
        """
        return self.labels_later_many([image])[0]

    def labels_later_many(self, images):
        """`labels_later` of several images of one size, run through the network together."""
        images = [checked_image(image) for image in images]
        if self.crf is None:
            return [lambda labels=labels: labels for labels in self.labels_many(images)]
        if self._tiled(images[0]):
            outputs = [(None, self.tiler.probabilities(image)) for image in images]
        else:
            outputs = self.outputs_many(images)
        return [lambda image=image, p=p: self._on_host(image, p)[1]
                for image, (_, p) in zip(images, outputs)]


