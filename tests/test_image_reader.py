"""Input pipeline: palette labels, padding/cropping, determinism, resume offsets, errors."""

import contextlib

import numpy as np
import pytest
from PIL import Image

from deeplab_resnet.data.images import read_image
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.palette import colorize, save_label_png
from deeplab_resnet.data import shapes
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.data.pipeline import ImageReader, draw_scale
from deeplab_resnet.model.network import preprocess
import tensorflow as tf


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=12,
                                      num_val=2, size=(40, 56), seed=3)


def take(reader, count, batch_size=2, start=0):
    """`count` batches as numpy, closing the iterator (see ImageReader.batches)."""
    with contextlib.closing(reader.batches(batch_size, start=start)) as batches:
        return [tuple(t.numpy() for t in next(batches)) for _ in range(count)]


def test_palette_labels_and_padding(data):
    reader = ImageReader(data["root"], data["train"], (64, 64), shuffle=False)
    (images, labels), = take(reader, 1, batch_size=1)
    image = read_image(reader.images[0])
    label = read_label(reader.labels[0])
    h, w = label.shape
    # Palette PNG: pixel values are class indices (decode_png would give colours).
    assert set(np.unique(label)) <= {0, 1, 2, 3, 255} and (label > 0).any()
    np.testing.assert_array_equal(labels[0, :h, :w], label)
    np.testing.assert_allclose(images[0, :h, :w], preprocess(image).numpy())
    # Bottom/right padding: the mean colour (0 after preprocessing), the ignore label.
    assert np.all(images[0, h:] == 0) and np.all(images[0, :, w:] == 0)
    assert np.all(labels[0, h:] == 255) and np.all(labels[0, :, w:] == 255)


def test_deterministic_and_resumable(data):
    def make(seed):
        return ImageReader(data["root"], data["train"], (32, 32), random_scale=True,
                           random_mirror=True, seed=seed)
    first = take(make(7), 8)
    again = take(make(7), 8)
    for (a, b), (c, d) in zip(first, again):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    # Starting at example 10 continues the same stream (resume), across an epoch boundary.
    resumed = take(make(7), 3, start=10)
    for (a, b), (c, d) in zip(first[5:], resumed):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    other = take(make(8), 1)
    assert not np.array_equal(other[0][0], first[0][0])
    # Nearest-neighbour label scaling never invents class values.
    assert set(np.unique(np.concatenate([b for _, b in first]))) <= {0, 1, 2, 3, 255}


def test_every_file_once_per_epoch(data):
    reader = ImageReader(data["root"], data["train"], (32, 32), seed=5)
    n = len(reader)
    files = [int(reader._file_index(tf.constant(i, tf.int64))) for i in range(2 * n)]
    assert sorted(files[:n]) == list(range(n)) and sorted(files[n:]) == list(range(n))
    assert files[:n] != files[n:]


def test_scale_modes():
    caffe = {float(draw_scale(tf.constant([1, i], tf.int64), "caffe")) for i in range(200)}
    assert caffe == {0.5, 0.75, 1.0, 1.25, 1.5}  # the scales of DeepLab's Caffe data layer
    uniform = [float(draw_scale(tf.constant([1, i], tf.int64), "uniform")) for i in range(200)]
    assert 0.5 <= min(uniform) and max(uniform) < 1.5 and len(set(uniform)) == 200


def _one_line_list(tmp_path, image, label):
    path = tmp_path / "list.txt"
    path.write_text(f"{image} {label}\n")
    return str(path)


def test_rgb_label_refused_with_advice(data, tmp_path):
    rgb = tmp_path / "rgb.png"
    label = read_label(data["root"] + "/SegmentationClass/shape_0000.png")
    Image.fromarray(colorize(label)).save(rgb)
    image = data["root"] + "/JPEGImages/shape_0000.jpg"
    reader = ImageReader(None, _one_line_list(tmp_path, image, rgb), (32, 32))
    with pytest.raises(DeepLabError, match="convert"):
        take(reader, 1, batch_size=1)


def test_size_mismatch_names_files(data, tmp_path):
    small = tmp_path / "small.png"
    save_label_png(np.zeros((5, 7), np.uint8), small)
    image = data["root"] + "/JPEGImages/shape_0000.jpg"
    reader = ImageReader(None, _one_line_list(tmp_path, image, small), (32, 32))
    with pytest.raises(DeepLabError, match="small.png: label is 7x5 but image"):
        take(reader, 1, batch_size=1)


@pytest.mark.parametrize("content, message", [
    ("", "the list is empty"),
    ("/JPEGImages/shape_0000.jpg\n", ":1: expected 'IMAGE_PATH LABEL_PATH'"),
    ("\n/JPEGImages/missing.jpg /SegmentationClass/shape_0000.png\n",
     ":2: .*missing.jpg: no such file"),
])
def test_list_errors(data, tmp_path, content, message):
    path = tmp_path / "list.txt"
    path.write_text(content)
    with pytest.raises(DeepLabError, match=message):
        ImageReader(data["root"], str(path), (32, 32))


# -- TensorFlow's decoders where the format allows, PIL for the rest: the same pixels ------

def _write_pairs(folder):
    """(image, label, expected image kind, expected label kind) for many encodings."""
    from deeplab_resnet.data import pipeline as ir
    rng = np.random.default_rng(1)
    h, w = 37, 53
    pixels = rng.integers(0, 256, (h, w, 3), np.uint8)
    values = rng.integers(0, 256, (h, w)).astype(np.uint8)
    values.ravel()[:256] = np.arange(256)  # every index, for the palette and gray paths
    images = {"jpeg420.jpg": (Image.fromarray(pixels), dict(quality=90), ir.JPEG),
              "jpeg444.jpg": (Image.fromarray(pixels), dict(subsampling=0), ir.JPEG),
              "progressive.jpg": (Image.fromarray(pixels), dict(progressive=True), ir.JPEG),
              "rgb.png": (Image.fromarray(pixels), {}, ir.PNG_RGB),
              "gray.jpg": (Image.fromarray(pixels[..., 0]), {}, ir.PIL),
              "cmyk.jpg": (Image.fromarray(pixels).convert("CMYK"), {}, ir.PIL),
              "rgba.png": (Image.fromarray(pixels).convert("RGBA"), {}, ir.PIL),
              "rgb16.png": (None, {}, ir.PIL),
              "image.bmp": (Image.fromarray(pixels), {}, ir.PIL)}
    shuffled = Image.fromarray(values, "P")
    shuffled.putpalette(list(rng.permutation(768) % 256))  # repeated colours too
    small_palette = Image.fromarray(values % 7, "P")
    small_palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9, 1, 2, 3, 4, 5, 6])
    labels = {"voc.png": (None, ir.PNG_PALETTE), "shuffled.png": (shuffled, ir.PNG_PALETTE),
              "seven.png": (small_palette, ir.PNG_PALETTE),
              "gray.png": (Image.fromarray(values), ir.PNG_GRAY),
              "gray16.png": (Image.fromarray(values.astype(np.uint16)), ir.PIL),
              "la.png": (Image.fromarray(np.stack([values, np.full_like(values, 255)], -1), "LA"),
                         ir.PIL)}
    pairs = []
    for (name, (image, options, kind)), (label_name, (label, label_kind)) in zip(
            images.items(), list(labels.items()) * 2):
        path = folder / name
        if image is None:  # 16-bit RGB PNG: written by TensorFlow (PIL cannot)
            path.write_bytes(tf.io.encode_png(tf.constant(pixels.astype(np.uint16) * 257)).numpy())
        else:
            image.save(path, **options)
        label_path = folder / f"{path.stem}_{label_name}"
        if label is None:
            save_label_png(values, label_path)
        else:
            label.save(label_path)
        pairs.append((path, label_path, kind, label_kind))
    return pairs


def test_tensorflow_decoders_give_pil_pixels(tmp_path):
    from deeplab_resnet.data import pipeline as ir
    pairs = _write_pairs(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{image} {label}\n" for image, label, _, _ in pairs))
    reader = ImageReader(None, str(listing), (32, 32), shuffle=False)
    decode = tf.function(lambda i: reader._decode(i, None))
    for i, (image, label, kind, label_kind) in enumerate(pairs):
        assert (ir.image_kind(str(image)), ir.label_kind(str(label))[0]) == (kind, label_kind), (
            image, label, ir.png_header(str(label)))
        decoded_image, decoded_label = decode(tf.constant(i, tf.int64))
        np.testing.assert_array_equal(decoded_image.numpy(), read_image(str(image)))
        np.testing.assert_array_equal(decoded_label.numpy(), read_label(str(label)))


def test_shapes_dataset_takes_the_tensorflow_decoders(data):
    from deeplab_resnet.data import pipeline as ir
    reader = ImageReader(data["root"], data["train"], (32, 32))
    assert set(reader._decoders["image_kinds"].numpy()) == {ir.JPEG}
    assert set(reader._decoders["label_kinds"].numpy()) == {ir.PNG_PALETTE}


def test_bad_labels_on_the_tensorflow_path_name_the_file(data, tmp_path):
    bad = tmp_path / "bad.png"
    label = read_label(data["root"] + "/SegmentationClass/shape_0000.png").copy()
    label[0, 0] = 7
    save_label_png(label, bad)
    image = data["root"] + "/JPEGImages/shape_0000.jpg"
    reader = ImageReader(None, _one_line_list(tmp_path, image, bad), (32, 32))
    with contextlib.closing(reader.batches(1, num_classes=4)) as batches:
        with pytest.raises(DeepLabError, match="bad.png: label values 7 are neither a class"):
            next(batches)


def test_a_truncated_jpeg_is_named(data, tmp_path):
    cut = tmp_path / "cut.jpg"
    whole = open(data["root"] + "/JPEGImages/shape_0000.jpg", "rb").read()
    cut.write_bytes(whole[:len(whole) // 2])
    label = data["root"] + "/SegmentationClass/shape_0000.png"
    reader = ImageReader(None, _one_line_list(tmp_path, cut, label), (32, 32))
    with pytest.raises(DeepLabError, match="cut.jpg: not an image"):
        take(reader, 1, batch_size=1)
