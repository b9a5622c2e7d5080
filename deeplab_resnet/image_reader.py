"""The training input pipeline: list file -> decoded, augmented, batched tf.data.

Every random choice is a stateless function of (seed, example number): which
file (a per-epoch permutation), the scale, the mirror flip and the crop
offset. The stream of batches is therefore fixed by --random-seed, and
resuming at example k only needs `Dataset.range(k, ...)`, with no iterator
state to save.

Images and labels are decoded by `deeplab_resnet.utils` (PIL): tf.io.decode_png
expands palette PNGs to RGB colours, which would turn VOC class indices into
wrong labels.
"""

import functools

import numpy as np
import tensorflow as tf

from deeplab_resnet import defaults, metrics, utils
from deeplab_resnet.errors import SettingError, DeepLabError, first_line
from deeplab_resnet.model import preprocess

SCALE_MODES = ("uniform", "caffe")
# DeepLab's Caffe data layer draws the scale from this set; the 2017 TF port
# draws it uniformly from [0.5, 1.5].
CAFFE_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
UNIFORM_SCALE_RANGE = (0.5, 1.5)
# Independent random streams per example: scale, mirror, crop y, crop x.
_STREAMS = 4
_ENDLESS = 2 ** 62


def draw_scale(seed, mode):
    """A random scale factor from a stateless seed (shape [2]) for a scale mode."""
    if mode == "caffe":
        choice = tf.random.stateless_uniform([], seed, 0, len(CAFFE_SCALES), dtype=tf.int32)
        return tf.gather(tf.constant(CAFFE_SCALES, tf.float32), choice)
    low, high = UNIFORM_SCALE_RANGE
    return tf.random.stateless_uniform([], seed, low, high)


class ImageReader:
    """Reads a segmentation list file as an endless, deterministic stream of crops.

    Args:
        data_dir, data_list: see `utils.read_list`.
        input_size: (height, width) of the crops.
        random_scale: rescale each pair by a random factor (image bilinear,
            label nearest neighbour).
        random_mirror: flip each pair horizontally with probability 1/2.
        ignore_label: label of padded pixels (and the value that is not scored).
        seed: fixes file order and augmentation.
        scale_mode: "uniform" (the 2017 port: [0.5, 1.5], default) or "caffe"
            (DeepLab's Caffe set {0.5, 0.75, 1, 1.25, 1.5}).
        shuffle: visit the files in a new random order each epoch.

    Crops smaller images after padding them at the bottom and right, the image
    with the mean colour (0 after `preprocess`) and the label with the ignore label.
    """

    def __init__(self, data_dir, data_list, input_size, random_scale=False, random_mirror=False,
                 ignore_label=defaults.IGNORE_LABEL, seed=1234, scale_mode="uniform", shuffle=True):
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {SCALE_MODES}, got '{scale_mode}'")
        self.images, self.labels = utils.read_list(data_dir, data_list)
        self.input_size = tuple(int(v) for v in input_size)
        self.random_scale = random_scale
        self.random_mirror = random_mirror
        self.ignore_label = int(ignore_label)
        self.seed = int(seed)
        self.scale_mode = scale_mode
        self.shuffle = shuffle
        # The numpy decoder records what went wrong: tf.data only passes on a
        # generic error with a Python traceback in its message.
        self.error = None

    def __len__(self):
        return len(self.images)

    def _load(self, index, num_classes=None):
        """The decoded pair of file `index`; with `num_classes`, its label values are checked
        (a value that is neither a class nor the ignore label is an error, not ignored)."""
        index = int(index)
        try:
            image = utils.read_image(self.images[index])
            label = utils.read_label(self.labels[index])
            if image.shape[:2] != label.shape:
                raise DeepLabError(
                    f"{self.labels[index]}: label is {label.shape[1]}x{label.shape[0]} but image "
                    f"{self.images[index]} is {image.shape[1]}x{image.shape[0]} (width x height)")
            if num_classes is not None:
                # The values present (a histogram is faster than np.unique on every pixel).
                present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
                try:
                    metrics.check_labels(present, num_classes, self.ignore_label)
                except ValueError as exc:
                    raise SettingError(f"{self.labels[index]}: {exc} ({{num_classes}} "
                                       f"{num_classes})", "num_classes") from None
        except DeepLabError as exc:
            self.error = exc  # raised again outside tf.data, which turns it into a string
            raise
        return image, label

    def _file_index(self, example):
        count = tf.constant(len(self), tf.int64)
        position = example % count
        if not self.shuffle:
            return position
        epoch = example // count
        return tf.random.experimental.index_shuffle(
            position, tf.stack([tf.constant(self.seed, tf.int64), epoch]), count - 1)

    def _example(self, example, num_classes=None):
        """(preprocessed float32 HxWx3 crop, int32 HxW label crop) for example number `example`."""
        load = functools.partial(self._load, num_classes=num_classes)
        image, label = tf.numpy_function(load, [self._file_index(example)],
                                         (tf.uint8, tf.uint8), stateful=False)
        image.set_shape([None, None, 3])
        label = tf.cast(label[..., None], tf.int32)
        label.set_shape([None, None, 1])
        seeds = [tf.stack([tf.constant(self.seed, tf.int64), example * _STREAMS + k])
                 for k in range(_STREAMS)]
        if self.random_scale:
            scale = draw_scale(seeds[0], self.scale_mode)
            hw = tf.cast(tf.shape(image)[:2], tf.float32)
            size = tf.maximum(tf.cast(hw * scale, tf.int32), 1)
            image = tf.image.resize(image, size, method="bilinear")
            label = tf.image.resize(label, size, method="nearest")
        image = preprocess(image)
        if self.random_mirror:
            flip = tf.random.stateless_uniform([], seeds[1]) < 0.5
            image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
            label = tf.cond(flip, lambda: label[:, ::-1], lambda: label)
        image, label = self._crop(image, label, seeds[2], seeds[3])
        return image, label[..., 0]

    def _crop(self, image, label, seed_y, seed_x):
        crop_h, crop_w = self.input_size
        shape = tf.shape(image)
        h, w = tf.maximum(shape[0], crop_h), tf.maximum(shape[1], crop_w)
        pad = [[0, h - shape[0]], [0, w - shape[1]], [0, 0]]
        image = tf.pad(image, pad, constant_values=0.0)
        label = tf.pad(label, pad, constant_values=self.ignore_label)
        y = tf.random.stateless_uniform([], seed_y, 0, h - crop_h + 1, dtype=tf.int32)
        x = tf.random.stateless_uniform([], seed_x, 0, w - crop_w + 1, dtype=tf.int32)
        image = image[y:y + crop_h, x:x + crop_w]
        label = label[y:y + crop_h, x:x + crop_w]
        image.set_shape([crop_h, crop_w, 3])
        label.set_shape([crop_h, crop_w, 1])
        return image, label

    def dataset(self, batch_size, micro_batches=None, start=0, shard=None, num_classes=None):
        """Endless dataset of (images, labels) batches.

        Args:
            batch_size: examples per batch (per replica).
            micro_batches: if given, batches are grouped by this many into
                elements of shape [micro_batches, batch_size, ...] (gradient
                accumulation).
            start: number of the first example of the global stream
                (examples already consumed by all replicas together).
            shard: a `tf.distribute.InputContext`: this pipeline feeds
                `num_replicas_in_sync / num_input_pipelines` consecutive replicas
                of its worker, one element per replica in turn. Default: one
                pipeline, one replica.
            num_classes: if given, a label value that is neither a class nor
                the ignore label stops the pipeline with an error naming the file.

        Micro-batch m of update u is the global batch of examples
        `start + (u * micro_batches + m) * G + [0, G)`, G = batch_size x replicas,
        and replica r reads its slice `r * batch_size + [0, batch_size)`: the
        replicas together read what one process with a batch of G would.
        """
        shard = shard or tf.distribute.InputContext()
        group = micro_batches or 1
        local = shard.num_replicas_in_sync // shard.num_input_pipelines
        first_replica = shard.input_pipeline_id * local
        global_batch = batch_size * shard.num_replicas_in_sync

        def example_number(k):
            """Global example number of the k-th example this pipeline reads."""
            element, offset = k // (group * batch_size), k % (group * batch_size)
            update, replica = element // local, first_replica + element % local
            micro, index = offset // batch_size, offset % batch_size
            return start + (update * group + micro) * global_batch + replica * batch_size + index

        data = tf.data.Dataset.range(_ENDLESS).map(example_number)
        data = data.map(functools.partial(self._example, num_classes=num_classes),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        data = data.batch(batch_size, drop_remainder=True)
        if micro_batches is not None:
            data = data.batch(micro_batches, drop_remainder=True)
        return data.prefetch(tf.data.AUTOTUNE)

    def batches(self, batch_size, micro_batches=None, start=0, strategy=None, num_classes=None):
        """Iterates over `dataset(...)`, turning a decoding failure into a DeepLabError.

        With a `tf.distribute` strategy (default: the current one), each
        worker reads only its replicas' shard and the batches are distributed
        values holding `batch_size` examples per replica.

        Close the generator when done (`contextlib.closing`): a tf.data
        iterator still running Python decoders when the interpreter exits
        can deadlock its shutdown.
        """
        strategy = strategy or tf.distribute.get_strategy()
        iterator = iter(strategy.distribute_datasets_from_function(
            lambda shard: self.dataset(batch_size, micro_batches, start, shard, num_classes)))
        while True:
            try:
                yield next(iterator)
            except tf.errors.OpError as exc:
                if self.error is not None:
                    raise self.error from None
                raise DeepLabError(f"reading {len(self)} files of the list failed: "
                                f"{first_line(exc)}") from None
