"""Your own data (issue 27 items 2, 3 and 7): prepare.py folders, convert_rgb_labels.py
--classes / --ignore-colour, and images read in the orientation their EXIF gives."""

import numpy as np
import pytest
from PIL import Image

import test_dataset_tools
from test_dataset_tools import assert_one_line_error
from deeplab_resnet.data.labels import read_label

run_script = test_dataset_tools.run_script  # the fixture: the tools run in-process

CLASSES = "10 20 30 background\n200 0 0 cat\n0 0 200 dog\n"
COLOURS = np.array([(10, 20, 30), (200, 0, 0), (0, 0, 200)], np.uint8)
IGNORE = (255, 255, 255)


def own_mask(seed, h=6, w=8):
    """(HxWx3 RGB mask in the file's colours and white, HxW class indices with 255)."""
    labels = np.random.default_rng(seed).integers(0, 3, (h, w)).astype(np.uint8)
    labels[0, :2] = 255
    rgb = np.where(labels[..., None] == 255, np.uint8(255), COLOURS[labels % 3])
    return rgb.astype(np.uint8), labels


@pytest.fixture
def classes_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text(CLASSES)
    return path


# ---- convert_rgb_labels.py --classes ----

def test_convert_with_a_classes_file_and_an_ignore_colour(tmp_path, classes_file, run_script):
    masks = tmp_path / "masks"
    masks.mkdir()
    expected = {}
    for seed in range(2):
        rgb, expected[seed] = own_mask(seed)
        Image.fromarray(rgb).save(masks / f"m{seed}.png")
    result = run_script("convert_rgb_labels.py", masks, "--classes", classes_file,
                        "--ignore-colour", "255,255,255", "--output-dir", tmp_path / "labels")
    assert result.returncode == 0, result.stderr
    assert "2 RGB labels converted" in result.stdout
    for seed, labels in expected.items():
        written = Image.open(tmp_path / "labels" / f"m{seed}.png")
        np.testing.assert_array_equal(read_label(tmp_path / "labels" / f"m{seed}.png"), labels)
        assert written.getpalette()[:9] == COLOURS.ravel().tolist()  # drawn in your colours
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["m0.png", "m1.png"]


def test_a_palette_mask_in_other_index_order_is_read_by_its_colours(tmp_path, classes_file,
                                                                    run_script):
    rgb, labels = own_mask(2)
    # A paint tool's palette PNG: the same colours, numbered in another order.
    order = [(255, 255, 255), (0, 0, 200), (10, 20, 30), (200, 0, 0)]
    indices = np.zeros(labels.shape, np.uint8)
    for index, colour in enumerate(order):
        indices[(rgb == colour).all(axis=-1)] = index
    image = Image.fromarray(indices, mode="P")
    image.putpalette([v for colour in order for v in colour])
    image.save(tmp_path / "painted.png")
    result = run_script("convert_rgb_labels.py", tmp_path / "painted.png", "--classes",
                        classes_file, "--ignore-colour", "255,255,255", "--output-dir",
                        tmp_path / "out")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "painted.png"), labels)


def test_an_unknown_colour_names_file_colour_count_position_and_leaves_nothing(
        tmp_path, classes_file, run_script):
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(own_mask(0)[0]).save(masks / "a.png")  # fine, converted first
    rgb = own_mask(1)[0]
    rgb[3, 4] = rgb[5, 6] = (1, 2, 3)
    Image.fromarray(rgb).save(masks / "b.png")
    result = run_script("convert_rgb_labels.py", masks, "--classes", classes_file,
                        "--ignore-colour", "255,255,255", "--output-dir", tmp_path / "out" / "l")
    assert_one_line_error(result, str(masks / "b.png"), "(1, 2, 3)", "row 3, col 4",
                          "2 pixels", f"--classes {classes_file}")
    assert not (tmp_path / "out").exists()
    # Without the ignore colour, white is unknown too.
    result = run_script("convert_rgb_labels.py", masks / "a.png", "--classes", classes_file,
                        "--output-dir", tmp_path / "out2")
    assert_one_line_error(result, "(255, 255, 255)", "row 0, col 0")
    assert not (tmp_path / "out2").exists()


def test_a_failed_run_keeps_an_existing_output_folder_as_it_was(tmp_path, classes_file,
                                                               run_script):
    out = tmp_path / "labels"
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    rgb = own_mask(1)[0]
    rgb[0, 0] = (9, 9, 9)
    Image.fromarray(rgb).save(tmp_path / "b.png")
    result = run_script("convert_rgb_labels.py", tmp_path / "b.png", "--classes", classes_file,
                        "--output-dir", out)
    assert result.returncode == 2
    assert [p.name for p in out.iterdir()] == ["old.png"]


@pytest.mark.parametrize("args,fragment", [
    (["--ignore-colour", "10,20,30"], "is the colour of class 0"),
    (["--ignore-colour", "1,2"], "expected 'R,G,B'"),
    (["--num-classes", "3"], "--num-classes is for VOC's colours"),
])
def test_convert_flag_errors(tmp_path, classes_file, run_script, args, fragment):
    Image.fromarray(own_mask(0)[0]).save(tmp_path / "a.png")
    result = run_script("convert_rgb_labels.py", tmp_path / "a.png", "--classes", classes_file,
                        "--output-dir", tmp_path / "out", *args)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


# ---- prepare.py folders ----

def make_folders(root, names, label_names):
    for name in names:
        (root / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / "imgs" / name)
    for name in label_names:
        (root / "labels" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((6, 8), np.uint8)).save(root / "labels" / name)


def test_folders_pairs_by_stem_in_sub_folders_and_splits_reproducibly(tmp_path, run_script):
    images = [f"a{i}.jpg" for i in range(6)] + ["sub/b0.png", "sub/b1.jpeg", "lone.jpg"]
    labels = [f"a{i}.png" for i in range(6)] + ["sub/b0.png", "b1.png", "extra.png"]
    make_folders(tmp_path, images, labels)
    args = ["folders", "--images", tmp_path / "imgs", "--labels", tmp_path / "labels",
            "--list-dir", tmp_path / "lists", "--val-fraction", "0.25", "--seed", "3"]
    result = run_script("prepare.py", *args)
    assert result.returncode == 0, result.stderr
    train = (tmp_path / "lists" / "folders_train.txt").read_text().splitlines()
    val = (tmp_path / "lists" / "folders_val.txt").read_text().splitlines()
    assert len(train) == 6 and len(val) == 2  # round(0.25 x 8)
    assert "/imgs/sub/b1.jpeg /labels/b1.png" in train + val
    assert "/imgs/sub/b0.png /labels/sub/b0.png" in train + val
    assert f"1 images without a label, left out: {tmp_path / 'imgs' / 'lone.jpg'}" in result.stdout
    assert "1 labels without an image, left out" in result.stdout
    assert f"use --data-dir {tmp_path} --data-list {tmp_path / 'lists' / 'folders_train.txt'}" \
        in result.stdout
    # The same files and seed: the same lists; the lists read as training reads them.
    from deeplab_resnet.data.lists import read_list
    assert len(read_list(str(tmp_path), str(tmp_path / "lists" / "folders_val.txt"))[0]) == 2
    result = run_script("prepare.py", *args[:-1], "3", "--name", "again")
    assert (tmp_path / "lists" / "again_val.txt").read_text().splitlines() == val
    result = run_script("prepare.py", *args[:-1], "4", "--name", "other")
    assert sorted((tmp_path / "lists" / "other_val.txt").read_text().splitlines()
                  + (tmp_path / "lists" / "other_train.txt").read_text().splitlines()) == \
        sorted(train + val)


def test_folders_refuses_an_empty_pairing_and_writes_nothing(tmp_path, run_script):
    make_folders(tmp_path, ["a.jpg", "b.jpg"], ["c.png"])
    result = run_script("prepare.py", "folders", "--images", tmp_path / "imgs",
                        "--labels", tmp_path / "labels", "--list-dir", tmp_path / "lists")
    assert_one_line_error(result, "no image of --images", "(2 images)", "(1 label PNGs)")
    assert not (tmp_path / "lists").exists()


def test_folders_names_colour_masks_given_as_labels(tmp_path, run_script):
    make_folders(tmp_path, ["a.jpg"], [])
    (tmp_path / "labels").mkdir()
    Image.fromarray(own_mask(0)[0]).save(tmp_path / "labels" / "a.png")
    result = run_script("prepare.py", "folders", "--images", tmp_path / "imgs",
                        "--labels", tmp_path / "labels", "--list-dir", tmp_path / "lists")
    assert_one_line_error(result, "a.png: an RGB image", "convert_rgb_labels.py")
    assert not (tmp_path / "lists").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--val-fraction", "1"], "--val-fraction must be in [0, 1)"),
    (["--root", "x"], "--root is for the benchmarks"),
    (["--name", "a/b"], "a plain file name is needed"),
])
def test_folders_flag_errors(tmp_path, run_script, args, fragment):
    result = run_script("prepare.py", "folders", "--images", tmp_path, "--labels", tmp_path,
                        "--list-dir", tmp_path / "lists", *args)
    assert_one_line_error(result, fragment)


# ---- EXIF orientation ----

def rotated_jpeg(path, pixels, orientation):
    """Writes `pixels` as stored, tagged with an EXIF orientation."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, format="JPEG", quality=100, exif=exif)


def test_images_are_read_as_viewers_show_them(tmp_path):
    import deeplab_resnet
    from deeplab_resnet.data.images import read_image, to_rgb
    stored = np.zeros((16, 24, 3), np.uint8)
    stored[:8] = 255  # the top half white, as stored
    rotated_jpeg(tmp_path / "phone.jpg", stored, 6)  # 6: shown turned 90 degrees clockwise
    shown = read_image(tmp_path / "phone.jpg")
    assert shown.shape == (24, 16, 3)
    assert shown[:, 12:].mean() > 240 and shown[:, :4].mean() < 15  # the white half is right
    assert to_rgb(Image.open(tmp_path / "phone.jpg")).shape == (24, 16, 3)
    from conftest import save_model, tiny_model
    segmenter = deeplab_resnet.Segmenter.load(save_model(tiny_model(3), tmp_path / "m" / "m"))
    assert segmenter.predict(tmp_path / "phone.jpg").labels.shape == (24, 16)
    assert segmenter.predict(Image.open(tmp_path / "phone.jpg")).labels.shape == (24, 16)


def test_training_decodes_rotated_images_upright(tmp_path):
    from deeplab_resnet.data.images import read_image
    from deeplab_resnet.data.pipeline import PIL, ImageReader, image_kind
    stored = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    rotated_jpeg(tmp_path / "phone.jpg", stored, 8)
    Image.fromarray(np.ones((24, 16), np.uint8)).save(tmp_path / "label.png")
    assert image_kind(str(tmp_path / "phone.jpg")) == PIL
    (tmp_path / "list.txt").write_text("/phone.jpg /label.png\n")
    reader = ImageReader(str(tmp_path), str(tmp_path / "list.txt"), (24, 16), shuffle=False)
    image, label = reader._decode(0, None)
    np.testing.assert_array_equal(image.numpy(), read_image(tmp_path / "phone.jpg"))
    assert label.shape == (24, 16)


def test_a_label_in_the_stored_size_of_a_rotated_image_says_so(tmp_path):
    from deeplab_resnet.data.images import size_mismatch
    rotated_jpeg(tmp_path / "phone.jpg", np.zeros((16, 24, 3), np.uint8), 6)
    message = size_mismatch("label.png", (16, 24), str(tmp_path / "phone.jpg"), (24, 16, 3))
    assert message.startswith("label.png: label is 24x16 but image")
    assert "EXIF orientation 6" in message and "the label's size" in message
    plain = size_mismatch("label.png", (16, 24), str(tmp_path / "phone.jpg"), (20, 16, 3))
    assert "EXIF" not in plain


def test_training_names_a_label_drawn_on_the_stored_photo(tmp_path):
    import contextlib

    from deeplab_resnet.data.pipeline import ImageReader
    from deeplab_resnet.errors import BadFileError
    rotated_jpeg(tmp_path / "phone.jpg", np.zeros((16, 24, 3), np.uint8), 6)
    Image.fromarray(np.ones((16, 24), np.uint8)).save(tmp_path / "label.png")  # as stored
    (tmp_path / "list.txt").write_text("/phone.jpg /label.png\n")
    reader = ImageReader(str(tmp_path), str(tmp_path / "list.txt"), (16, 16))
    with pytest.raises(BadFileError) as error, \
            contextlib.closing(reader.batches(1)) as batches:
        next(batches)
    assert error.value.path == str(tmp_path / "label.png")
    assert "EXIF orientation 6" in str(error.value) and "the label's size" in str(error.value)
