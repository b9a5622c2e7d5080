"""What a label that is not class indices is called (issue 18 item 8): a JPEG is named as
lossy; a colour image in the label column names swapped list columns before the converter."""

import contextlib

import numpy as np
import pytest
from PIL import Image

from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.lists import read_list
from deeplab_resnet.data.palette import colorize
from deeplab_resnet.data import shapes
from deeplab_resnet.errors import BadFileError
from deeplab_resnet.data.pipeline import ImageReader

CONVERTER = "the colours of its classes file ('classes'"
SWAPPED = "the list's columns may be swapped (each line is 'IMAGE_PATH LABEL_PATH')"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=2, num_val=1,
                                      size=(40, 48), seed=3)


def first_pair(data):
    images, labels = read_list(data["root"], data["train"])
    return images[0], labels[0]


def test_swapped_list_columns_are_named_with_the_jpeg(data, tmp_path):
    """The demo's images and labels listed the wrong way round, read as the training reads."""
    image, label = first_pair(data)
    swapped = tmp_path / "swapped.txt"
    swapped.write_text(f"{label} {image}\n")
    reader = ImageReader(None, str(swapped), (32, 32))
    with pytest.raises(BadFileError) as error, \
            contextlib.closing(reader.batches(1)) as batches:
        next(batches)
    message = str(error.value)
    assert message.startswith(f"{image}: a JPEG given as a label: JPEG is lossy, so its class "
                              "values are smeared")
    assert message.endswith(f"like a photo: {SWAPPED}")
    assert "\n" not in message and error.value.path == image


def test_a_grayscale_jpeg_label_is_named_lossy(data, tmp_path):
    """Class indices saved as JPEG: refused, not read with smeared values."""
    indices = read_label(first_pair(data)[1])
    path = tmp_path / "label.jpg"
    Image.fromarray(np.where(indices == 255, 0, indices * 60).astype(np.uint8)).save(path)
    with pytest.raises(BadFileError, match=r"label.jpg: a JPEG given as a label: JPEG is lossy.*"
                                           r"lossless PNGs of class indices$"):
        read_label(path)


def test_a_photo_png_label_names_swapped_columns_then_the_converter(data, tmp_path):
    path = tmp_path / "photo.png"
    noise = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    with pytest.raises(BadFileError) as error:
        read_label(path)
    message = str(error.value)
    assert "like a photo, not class indices" in message
    assert message.index(SWAPPED) < message.index(CONVERTER)


def test_a_colour_coded_label_names_both_causes_swapped_first(data, tmp_path):
    path = tmp_path / "coloured.png"
    Image.fromarray(colorize(read_label(first_pair(data)[1]))).save(path)
    with pytest.raises(BadFileError) as error:
        read_label(path)
    message = str(error.value)
    assert message.startswith(f"{path}: label image is 'RGB' (")
    assert f"if it is the photo, {SWAPPED}; if it is a colour-coded label" in message
    assert message.index(SWAPPED) < message.index(CONVERTER)
