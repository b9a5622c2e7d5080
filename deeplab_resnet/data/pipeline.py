"""The training input pipeline: list file -> decoded, augmented, batched tf.data.

Every random choice is a stateless function of (seed, example number): which
file (a per-epoch permutation), the scale, the mirror flip and the crop
offset. The stream of batches is therefore fixed by --random-seed, and
resuming at example k only needs `Dataset.range(k, ...)`, with no iterator
state to save.

Decoding runs in TensorFlow ops (no Python, no GIL) for the common formats,
chosen per file from its header when the reader is made (`decoders`):
RGB JPEGs (with libjpeg's accurate integer IDCT, the one PIL uses: the same
pixels), 8-bit RGB PNGs, 8-bit grayscale PNG labels and palette PNG labels
(VOC's: tf.io.decode_png returns a palette's colours, so each file's
palette is swapped for the gray ramp (i, i, i) in memory and the gray decode
is the class indices). The label check runs in
the graph too. Images with an EXIF orientation (phone photos) are decoded by
PIL and turned upright, as every viewer shows them; labels are read as
stored. Every other encoding the README promises (16-bit, LA/PA, CMYK or
grayscale JPEG, BMP, ...) is decoded by `deeplab_resnet.data.images` (PIL) in a
`tf.numpy_function`, which also produces every error message: a pair whose
sizes differ or whose labels fail the check is decoded again there, and a
file TensorFlow cannot decode is looked up with PIL to name it.
"""

import functools

import tensorflow as tf

from deeplab_resnet.data.decoders import (JPEG, PIL, PNG_PALETTE, identity_palettes, image_kind,
                                          label_kind)
from deeplab_resnet.data.images import read_image, size_mismatch
from deeplab_resnet.data.labels import check_labels, read_label
from deeplab_resnet.data.lists import read_list
from deeplab_resnet import defaults, settings
from deeplab_resnet.errors import BadFileError, DeepLabError, SettingError, first_line
from deeplab_resnet.model.network import preprocess

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
        data_dir, data_list: see `read_list`.
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
        if scale_mode not in settings.SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {settings.SCALE_MODES}, "
                             f"got '{scale_mode}'")
        self.images, self.labels = read_list(data_dir, data_list)
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
        self._decoders = self._decoder_table()

    def _decoder_table(self):
        """Tensors saying how each file is decoded, and the palettes of the palette labels."""
        label_kinds, palettes = zip(*(label_kind(path) for path in self.labels))
        return {"image_paths": tf.constant(self.images), "label_paths": tf.constant(self.labels),
                "image_kinds": tf.constant([image_kind(path) for path in self.images], tf.int32),
                "label_kinds": tf.constant(label_kinds, tf.int32),
                "palettes": tf.constant(palettes, tf.int32),
                "identity_palettes": tf.constant(identity_palettes())}

    def __len__(self):
        return len(self.images)

    def _load(self, index, num_classes=None):
        """The decoded pair of file `index`; with `num_classes`, its label values are checked
        (a value that is neither a class nor the ignore label is an error, not ignored)."""
        index = int(index)
        try:
            image = read_image(self.images[index])
            label = read_label(self.labels[index])
            if image.shape[:2] != label.shape:
                raise BadFileError(size_mismatch(self.labels[index], label.shape,
                                                 self.images[index], image.shape),
                                   path=self.labels[index])
            if num_classes is not None:
                try:
                    check_labels(label, num_classes, self.ignore_label)
                except ValueError as exc:
                    raise SettingError(f"{self.labels[index]}: {exc} ({{num_classes}} "
                                       f"{num_classes})", "num_classes") from None
        except DeepLabError as exc:
            self.error = exc  # raised again outside tf.data, which turns it into a string
            raise
        return image, label

    def _first_unreadable(self):
        """The error PIL gives for the first file of the list it cannot decode, or None.

        After a TensorFlow decoder failed, which names no file: every file is
        read again (slow for a long list, but only once something is broken).
        """
        for image, label in zip(self.images, self.labels):
            try:
                read_image(image)
                read_label(label)
            except DeepLabError as exc:
                return exc
        return None

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
        image, label = self._decode(self._file_index(example), num_classes)
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
        flip = (tf.random.stateless_uniform([], seeds[1]) < 0.5 if self.random_mirror
                else tf.constant(False))
        image, label = self._crop(image, label, seeds[2], seeds[3], flip)
        return image, label[..., 0]

    def _decode(self, index, num_classes):
        """(HxWx3 uint8 image, HxW uint8 label) of file `index`: TensorFlow's decoders where
        the formats allow and the pair passes the checks, else `_load` (PIL), which also
        raises the error of a pair that fails them."""
        table = self._decoders

        def with_pil():
            load = functools.partial(self._load, num_classes=num_classes)
            image, label = tf.numpy_function(load, [index], (tf.uint8, tf.uint8), stateful=False)
            return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(label, [None, None])

        def with_tf():
            image, label = self._tf_image(index), self._tf_label(index)
            ok = tf.reduce_all(tf.shape(image)[:2] == tf.shape(label))
            if num_classes is not None:
                present = tf.math.bincount(tf.cast(label, tf.int32), minlength=256,
                                           maxlength=256) > 0
                values = tf.range(256)
                allowed = (values < num_classes) | (values == self.ignore_label)
                ok = ok & tf.reduce_all(allowed | ~present)
            return tf.cond(ok, lambda: (image, label), with_pil)

        fast = ((tf.gather(table["image_kinds"], index) != PIL)
                & (tf.gather(table["label_kinds"], index) != PIL))
        return tf.cond(fast, with_tf, with_pil)

    def _tf_image(self, index):
        table = self._decoders
        data = tf.io.read_file(tf.gather(table["image_paths"], index))
        # The accurate integer IDCT is PIL's: the same pixels (TensorFlow's default is faster
        # and differs by a few levels).
        return tf.cond(tf.gather(table["image_kinds"], index) == JPEG,
                       lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                       lambda: tf.io.decode_png(data, channels=3))

    def _tf_label(self, index):
        table = self._decoders
        data = tf.io.read_file(tf.gather(table["label_paths"], index))

        def indices_as_gray():
            # decode_png gives a palette's colours, not the indices: with index i's colour
            # swapped for (i, i, i) the gray decode is the indices (libpng keeps r = g = b exact).
            offset, length = tf.unstack(tf.gather(table["palettes"], index))
            identity = tf.gather(table["identity_palettes"], length // 3 - 1)
            return tf.strings.join([tf.strings.substr(data, 0, offset), identity,
                                    tf.strings.substr(data, offset + length + 12, -1)])

        gray = tf.cond(tf.gather(table["label_kinds"], index) == PNG_PALETTE, indices_as_gray,
                       lambda: data)
        return tf.io.decode_png(gray, channels=1)[..., 0]

    def _crop(self, image, label, seed_y, seed_x, flip):
        """The crop of the (mirrored when `flip`) pair, padded at the bottom and right to the
        input size: the image preprocessed (padding 0, the mean colour), the label with
        the ignore label.

        Only the crop is mirrored and converted: its offset is drawn on the padded size
        of the whole pair, as if the whole image were mirrored, padded and cropped (the
        pixels are the same), but the work is on crop-sized tensors.
        """
        crop_h, crop_w = self.input_size
        shape = tf.shape(image)
        rows, cols = shape[0], shape[1]
        h, w = tf.maximum(rows, crop_h), tf.maximum(cols, crop_w)
        y = tf.random.stateless_uniform([], seed_y, 0, h - crop_h + 1, dtype=tf.int32)
        x = tf.random.stateless_uniform([], seed_x, 0, w - crop_w + 1, dtype=tf.int32)
        # Column j of the mirrored image is column cols - 1 - j of the image.
        first = tf.where(flip, tf.maximum(cols - x - crop_w, 0), x)
        last = tf.where(flip, cols - x, tf.minimum(x + crop_w, cols))
        bottom = tf.minimum(y + crop_h, rows)

        def cut(t):
            region = t[y:bottom, first:last]
            return tf.cond(flip, lambda: region[:, ::-1], lambda: region)

        pad = [[0, crop_h - (bottom - y)], [0, crop_w - (last - first)], [0, 0]]
        label = tf.pad(cut(label), pad, constant_values=self.ignore_label)
        image = preprocess(tf.pad(cut(image), pad))
        inside = (tf.range(crop_h)[:, None] < bottom - y) & (tf.range(crop_w) < last - first)
        image = tf.where(inside[..., None], image, 0.0)
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
            except tf.errors.ResourceExhaustedError:
                raise  # the batch does not fit in memory: not the files' fault
            except tf.errors.OpError as exc:
                if self.error is not None:
                    raise self.error from None
                unreadable = self._first_unreadable()
                if unreadable is not None:
                    raise unreadable from None
                raise DeepLabError(f"reading {len(self)} files of the list failed: "
                                f"{first_line(exc)}") from None
