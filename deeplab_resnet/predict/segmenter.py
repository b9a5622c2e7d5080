"""`Segmenter`: the library's front door for prediction: load any weights, predict, evaluate,
export. The commands evaluate.py, inference.py and export.py run through it."""

import logging
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from deeplab_resnet.data.images import read_image, to_rgb
from deeplab_resnet.data.lists import read_list
from deeplab_resnet import defaults
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.predict import crf as crf_lib
from deeplab_resnet.data import classes as classes_lib
from deeplab_resnet.data import datasets
from deeplab_resnet.predict import evaluation
from deeplab_resnet.predict import export as export_lib
from deeplab_resnet.runtime import precision as precision_lib
from deeplab_resnet.predict import prediction as predict_lib
from deeplab_resnet.predict.config import PredictConfig
from deeplab_resnet.errors import DeepLabError, SettingError

_log = logging.getLogger(__name__)


def as_rgb(image):
    """An image in any form `Segmenter.predict` takes -> HxWx3 uint8 RGB numpy array.

    Args:
        image: a file path (str or os.PathLike), a `PIL.Image` of any mode, or a
            uint8 numpy array / TensorFlow tensor: HxWx3 RGB, HxW grayscale or
            HxWx4 RGBA. Files and PIL images are converted as the commands
            convert them (grayscale, CMYK, palette, RGBA ... -> RGB).
    Raises:
        BadFileError (`.path`) for a missing or unreadable file; SettingError ("image")
        for an object of another type, or an array of another dtype or shape.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if tf.is_tensor(image):
        image = image.numpy()
    if not isinstance(image, np.ndarray):
        raise SettingError(f"{{image}}: expected a path, a PIL image or an HxWx3 uint8 array, "
                           f"got {type(image).__name__}", "image")
    channels = image.shape[2] if image.ndim == 3 else None
    if image.dtype == np.uint8 and channels == 3:
        return image
    if image.dtype == np.uint8 and (image.ndim == 2 or channels in (1, 4)):
        return to_rgb(Image.fromarray(image[..., 0] if channels == 1 else image))
    raise SettingError(f"{{image}}: expected an HxWx3 uint8 RGB array (or HxW, HxWx4), got "
                       f"{image.dtype} {image.shape}", "image")


def _names_and_colours(opened, num_classes, config):
    """(names, 256x3 palette) of a loaded model: those of `config.classes`; else its
    `class_names` or the recorded names, in the recorded colours or else its dataset's
    (see `datasets.classes`)."""
    if config.classes is not None:
        return list(config.classes.names), config.classes.palette
    names, palette = datasets.classes(config.dataset, num_classes,
                                      config.class_names or opened.class_names)
    if opened.class_colours is not None and config.dataset is None:
        palette = classes_lib.palette_of(opened.class_colours)
    return names, palette


def _load_network(weights, config):
    """(the opened weights file, the DeepLabResNet filled from it) for `weights`."""
    opened = checkpoint.open_weights(weights, prototxt=config.prototxt, variant=config.variant)
    return opened, checkpoint.build_model(opened, config.variant, config.num_classes,
                                          prototxt=config.prototxt)


class Segmenter:
    """A loaded network and its test protocol: images in, class labels out.

    Make one with `Segmenter.load`. It never prints: it logs on the
    "deeplab_resnet" logger (e.g. a warning when the precision asked for
    falls back to fp32) and raises the typed errors of
    `deeplab_resnet.errors`.

    Attributes:
        model: the network variant ("resnet101", "resnet50", "resnet152", "tiny").
        num_classes: the number of classes.
        class_names: one name per class: those of the classes file or names given to
            `load`, else those the weights record, else the dataset's (VOC's for
            21 classes, ...; class_<i> for a class count no dataset has).
        palette: 256x3 uint8 colours of the classes (the classes file's, else those
            the weights record, else the dataset's), for label PNGs and overlays
            (`deeplab_resnet.data.palette.save_label_png`, `overlay`).
        weights: the file actually read (for a folder of checkpoints, its latest).
        precision: the number format the network computes in ("fp32", "bf16",
            "fp16"): the one asked for, or fp32 where this hardware lacks it.
        predictor: the underlying `predict_lib.Predictor` (a `tf.Module`).

    Example:
        >>> seg = deeplab_resnet.Segmenter.load("train_iter_20000.caffemodel")
        >>> seg.model, seg.num_classes, seg.class_names[15]
        ('resnet101', 21, 'person')
        >>> seg.predict("photo.jpg").labels.shape      # (H, W) int32 class indices
        (375, 500)
    """

    def __init__(self, predictor, weights, class_names, palette):
        self.predictor = predictor
        self.model = predictor.model.variant
        self.num_classes = predictor.model.num_classes
        self.class_names = list(class_names)
        self.palette = palette
        self.weights = weights
        self.precision = precision_lib.NAMES[predictor.model.compute_dtype]

    @classmethod
    def load(cls, weights, config=None, **settings):
        """Loads weights in any format the commands take and sets the test protocol.

        Args:
            weights: a checkpoint prefix (`ckpt/voc12`) or folder of checkpoints
                (its latest is read), a `.caffemodel`, an `.npz` written by
                `convert`, or the 2017 TF port's `deeplab_resnet.ckpt` (V1) or
                `model.ckpt-N` (V2).
            config: a `PredictConfig` (default: its defaults).
            **settings: `PredictConfig` fields to change, e.g. `scales=(1.0, 0.5)`,
                `flip=True`, `precision="bf16"`, `crf=True`, `class_names=...`,
                `classes="classes.txt"` (a classes file: names and colours);
                `model=` names the variant (the field `variant`).
        Returns:
            a `Segmenter`.
        Raises:
            BadFileError: missing, unreadable or corrupt weights.
            SettingError: a setting that is unknown, bad or contradicts the
                weights (checked before the weights are read, where it can be).
            DeepLabError: `crf` without pydensecrf2 installed.

        Example:
            >>> seg = Segmenter.load("ckpt/voc12", scales=(1.0, 0.75, 0.5), flip=True)
        """
        if "model" in settings:
            settings["variant"] = settings.pop("model")
        config = PredictConfig.of(config, **settings)
        if config.crf_params is not None and not crf_lib.available():
            raise DeepLabError(crf_lib.INSTALL_HINT)
        opened, network = _load_network(weights, config)
        names, palette = _names_and_colours(opened, network.num_classes, config)
        segmenter = cls(predict_lib.make_predictor(network, config), opened.path, names, palette)
        _log.debug("loaded %s: %s, %d classes, computing in %s", opened.path, segmenter.model,
                   segmenter.num_classes, segmenter.precision)
        return segmenter

    def predict(self, image):
        """Segments one image.

        Args:
            image: a path, a `PIL.Image` (any mode), or an HxWx3 uint8 RGB numpy
                array or tensor (see `as_rgb`); any size.
        Returns:
            a `Prediction`: `labels` (HxW int32 class indices, what inference.py
            writes), `probabilities` (HxWxC float32) and `logits` (the network's
            raw h'xw'xC output).

        Example:
            >>> prediction = seg.predict(np.zeros((240, 320, 3), np.uint8))
            >>> prediction.labels.shape, prediction.probabilities.shape
            ((240, 320), (240, 320, 21))
        """
        return self.predictor(as_rgb(image))

    def predict_many(self, images, *, prefetch=predict_lib.PREFETCH_DEPTH):
        """Segments a sequence of images, decoding the next ones while the network runs.

        Args:
            images: an iterable of anything `predict` takes (e.g. file paths);
                consumed lazily.
            prefetch: how many images are decoded ahead (in one background thread).
        Yields:
            one `Prediction` per image, in order.

        Example:
            >>> for path, prediction in zip(paths, seg.predict_many(paths)):
            ...     print(path, np.bincount(prediction.labels.ravel()))
        """
        for image in predict_lib.prefetch(as_rgb, images, prefetch):
            yield self.predictor(image)

    def evaluate(self, data_dir, data_list, *, ignore_label=defaults.IGNORE_LABEL,
                 num_images=None, progress=None):
        """Scores the network on a labelled list, as evaluate.py does.

        Args:
            data_dir: folder the list's paths are relative to (None: as written).
            data_list: list file, one `IMAGE_PATH LABEL_PATH` per line (labels
                are palette or grayscale PNGs of class indices).
            ignore_label: label value that is not scored.
            num_images: score only the first N images (default: all).
            progress: called after each image with the images done and the confusion
                matrix so far (`evaluation.Scores.from_confusion(confusion).mean_iou` is
                the running mean IoU), or None.
        Returns:
            `Scores`: mean IoU, per-class IoU, pixel and class accuracy,
            frequency-weighted IoU and the confusion matrix (numpy).
        Raises:
            SettingError for a missing or empty list; BadFileError for a
            missing or unreadable image or label, or a label value that is
            neither a class nor `ignore_label`.

        Example:
            >>> scores = seg.evaluate("VOCdevkit/VOC2012", "dataset/val.txt")
            >>> print(scores.report())        # the lines evaluate.py prints
        """
        images, labels = read_list(data_dir, data_list)
        pairs = list(zip(images, labels))[:num_images]
        confusion = evaluation.evaluate(self.predictor, pairs, self.num_classes, ignore_label,
                                        progress=progress)
        return evaluation.Scores.from_confusion(confusion, self.class_names)

    def export(self, path):
        """Writes the network and its test protocol as a TensorFlow SavedModel, as export.py.

        Its `serving_default` signature takes `image` (uint8 [H, W, 3], any
        size) and returns `labels` (int32 [H, W]) and `probabilities` (float32
        [H, W, C]), computed as `predict` computes them (a dense CRF excepted:
        it is not a TensorFlow op). The classes are recorded: the `classes` signature
        (no inputs) returns `class_names` (string [C]) and `class_colours` (uint8
        [C, 3]). Written to a temporary folder and renamed into place.

        Args:
            path: the folder to create; it must not exist or be empty.
        Returns:
            the absolute path written.
        Raises:
            SettingError when `path` holds something or its parent is not
            writable; an OSError naming it when the write fails.

        Example:
            >>> path = seg.export("exported/")
            >>> serve = tf.saved_model.load(path).signatures["serving_default"]
            >>> serve(image=tf.zeros([240, 320, 3], tf.uint8))["labels"].shape
            TensorShape([240, 320])
        """
        output_dir = export_lib.check_output_dir(path, "path")
        export_lib.export(self.predictor, output_dir, self.class_names, self.palette)
        return output_dir

    def __repr__(self):
        return (f"Segmenter(model={self.model!r}, num_classes={self.num_classes}, "
                f"weights={self.weights!r}, precision={self.precision!r})")
