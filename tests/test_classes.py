"""Classes files (issue 27 items 1 and 4): the loader's errors, and names and colours recorded
in checkpoints and SavedModels, used by the API and the commands."""

import numpy as np
import pytest

from conftest import run_command, save_model, tiny_model
from deeplab_resnet.data.classes import Classes, as_classes, read_classes
from deeplab_resnet.errors import BadFileError, SettingError

TEXT = """\
# my own classes: R G B name
  0   0   0 background

255   0   0 road sign   # a name with a space
  0 128 255 sky
"""
NAMES = ("background", "road sign", "sky")
COLOURS = ((0, 0, 0), (255, 0, 0), (0, 128, 255))


@pytest.fixture
def classes_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text(TEXT)
    return path


def test_a_classes_file_gives_names_and_colours_in_index_order(classes_file):
    classes = read_classes(classes_file)
    assert (classes.names, classes.colours, classes.path) == (NAMES, COLOURS, str(classes_file))
    assert len(classes) == 3
    assert classes.palette[1].tolist() == [255, 0, 0]
    assert classes.palette[255].tolist() == [224, 224, 192]  # the ignore label: VOC's colour
    assert as_classes(classes.lines()).colours == COLOURS


@pytest.mark.parametrize("text,fragment", [
    ("0 0 0 a\n\n0 0 0 b\n", ":3: colour 0 0 0 is already class 0 'a' (line 1)"),
    ("0 0 0 a\n1 x 0 b\n", ":2: G 'x' is not a number"),
    ("0 0 0 a\n1 0 256 b\n", ":2: B 256 is outside 0..255"),
    ("0 0 0 a\n1 2 3\n", ":2: expected 'R G B name'"),
    ("# only one\n0 0 0 background\n", "1 class in it: a classes file needs at least 2"),
    ("0 0 0 a\n1 1 1 a\n", ":2: class name 'a' is already class 0"),
])
def test_a_bad_classes_file_is_one_line_naming_the_line(tmp_path, text, fragment):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(BadFileError) as error:
        read_classes(path)
    assert fragment in str(error.value) and str(error.value).startswith(str(path))
    assert error.value.path == str(path) and "\n" not in str(error.value)


def test_a_missing_classes_file_is_a_bad_file(tmp_path):
    with pytest.raises(BadFileError, match="no such file"):
        read_classes(tmp_path / "none.txt")


def test_train_config_takes_the_class_count_and_names_from_the_file(classes_file):
    from deeplab_resnet.training.config import TrainConfig
    config = TrainConfig(classes=str(classes_file))
    assert (config.num_classes, config.class_names, config.class_colours) == (3, NAMES, COLOURS)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig(classes=Classes(NAMES, COLOURS)).to_dict()["classes"] == \
        read_classes(classes_file).lines()
    with pytest.raises(SettingError) as error:
        TrainConfig(classes=str(classes_file), num_classes=4)
    assert error.value.fields == ("classes", "num_classes")
    assert "has 3 classes but num_classes is 4" in str(error.value)


def test_checkpoints_record_names_and_colours_for_the_segmenter_and_export(classes_file,
                                                                          tmp_path):
    import tensorflow as tf

    import deeplab_resnet
    from deeplab_resnet.weights import checkpoint
    plain = save_model(tiny_model(3), tmp_path / "plain" / "m")
    checkpoint.rewrite(plain, tmp_path / "named" / "m", classes=classes_file)
    info = checkpoint.describe(tmp_path / "named" / "m")
    assert (info.class_names, info.class_colours) == (NAMES, COLOURS)
    segmenter = deeplab_resnet.Segmenter.load(tmp_path / "named" / "m")
    assert segmenter.class_names == list(NAMES)
    assert segmenter.palette[:3].tolist() == [list(c) for c in COLOURS]
    served = tf.saved_model.load(segmenter.export(tmp_path / "exported"))
    recorded = served.signatures["classes"]()
    assert [n.decode() for n in recorded["class_names"].numpy()] == list(NAMES)
    assert recorded["class_colours"].numpy().tolist() == [list(c) for c in COLOURS]
    # The file given to load wins; a class count against it is one line.
    other = tmp_path / "other.txt"
    other.write_text("1 1 1 a\n2 2 2 b\n3 3 3 c\n")
    assert deeplab_resnet.Segmenter.load(plain, classes=other).class_names == ["a", "b", "c"]
    with pytest.raises(SettingError, match="has 3 classes but num_classes is 5"):
        deeplab_resnet.Segmenter.load(plain, classes=other, num_classes=5)
    with pytest.raises(SettingError, match="3 classes"):
        checkpoint.rewrite(save_model(tiny_model(4), tmp_path / "four" / "m"),
                           tmp_path / "four2" / "m", classes=classes_file)


def test_convert_records_the_classes_of_a_caffe_net(classes_file, tmp_path):
    import deeplab_resnet
    from deeplab_resnet.weights import checkpoint
    from deeplab_resnet.weights.caffe import deploy_prototxt, write_caffemodel
    net = tiny_model(3)
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt("tiny", 3))
    caffemodel = tmp_path / "net.caffemodel"
    write_caffemodel(str(prototxt), {k: v.numpy() for k, v in net.params.items()}, caffemodel)
    deeplab_resnet.convert(prototxt, caffemodel, ckpt_path=tmp_path / "ckpt" / "m",
                           classes=classes_file)
    info = checkpoint.describe(tmp_path / "ckpt" / "m")
    assert (info.class_names, info.class_colours) == (NAMES, COLOURS)


def test_commands_refuse_a_class_count_against_the_classes_file(classes_file, tmp_path,
                                                               capfd):
    from deeplab_resnet.cli import convert, export
    plain = save_model(tiny_model(3), tmp_path / "plain" / "m")
    status, out, err = run_command(export.main, [
        "--restore-from", plain, "--output-dir", tmp_path / "out", "--classes", classes_file,
        "--num-classes", "4"], capfd)
    assert status == 2 and not (tmp_path / "out").exists()
    assert err.strip().splitlines() == [
        f"error: --classes {classes_file} has 3 classes but --num-classes is 4: give one of "
        "them, or make them agree"]
    bad = tmp_path / "bad.txt"
    bad.write_text("0 0 0 a\n0 0 0 b\n")
    status, out, err = run_command(convert.main, [
        plain, "--ckpt-path", tmp_path / "ckpt" / "m", "--classes", bad], capfd)
    assert status == 2 and not (tmp_path / "ckpt").exists()
    assert len(err.strip().splitlines()) == 1 and f"{bad}:2: colour 0 0 0" in err


def test_the_palette_of_recorded_colours_colours_masks(classes_file, tmp_path, capfd):
    from PIL import Image

    from deeplab_resnet.cli import inference
    from deeplab_resnet.weights import checkpoint
    plain = save_model(tiny_model(3), tmp_path / "plain" / "m")
    checkpoint.rewrite(plain, tmp_path / "named" / "m", classes=classes_file)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((33, 41, 3), 90, np.uint8)).save(photo)
    status, out, err = run_command(inference.main, [photo, tmp_path / "named" / "m",
                                                    "--save-dir", tmp_path / "out"], capfd)
    assert status == 0, err
    mask = Image.open(tmp_path / "out" / "photo_mask.png")
    assert mask.getpalette()[:9] == [v for colour in COLOURS for v in colour]
    labels = np.asarray(mask)
    overlay = np.asarray(Image.open(tmp_path / "out" / "photo_overlay.png")).astype(int)
    expected = np.rint(0.5 * 90 + 0.5 * np.asarray(COLOURS)[labels])  # photo and class colour
    np.testing.assert_array_equal(overlay, expected)


def test_train_refuses_a_class_count_against_the_classes_file(classes_file, tmp_path, capfd):
    from deeplab_resnet.cli import train
    status, out, err = run_command(train.main, [
        "--classes", classes_file, "--num-classes", "5", "--data-dir", tmp_path,
        "--data-list", tmp_path / "none.txt", "--snapshot-dir", tmp_path / "snap"], capfd)
    assert status == 2 and not (tmp_path / "snap").exists()
    assert err.strip().splitlines() == [
        f"error: --classes {classes_file} has 3 classes but --num-classes is 5: give one of "
        "them, or make them agree"]


def test_training_records_the_colours_and_a_resume_keeps_them(tmp_path):
    import dataclasses

    from deeplab_resnet import training
    from deeplab_resnet.data import shapes
    from deeplab_resnet.weights import checkpoint
    data = shapes.make_shapes_dataset(tmp_path / "data", num_train=2, num_val=0,
                                      size=(36, 40), seed=2)
    four = tmp_path / "shapes.txt"
    four.write_text("0 0 0 background\n220 40 40 square\n40 200 60 disc\n50 70 230 triangle\n")
    config = training.TrainConfig(
        data_dir=data["root"], data_list=data["train"], variant="tiny", classes=str(four),
        batch_size=1, input_size=(32, 32), num_steps=1, save_pred_every=100,
        save_num_images=0, learning_rate=1e-3, snapshot_dir=str(tmp_path / "s"))
    assert config.num_classes == 4
    colours = ((0, 0, 0), (220, 40, 40), (40, 200, 60), (50, 70, 230))
    result = training.train(config)
    assert checkpoint.describe(result.checkpoint).class_colours == colours
    # A resume keeps them without the file; other colours are another run.
    resumed = dataclasses.replace(config, num_steps=2, classes=None, class_names=None)
    result = training.train(resumed)
    assert result.updates == 2 and checkpoint.describe(result.checkpoint).class_colours == colours
    other = tmp_path / "other.txt"
    other.write_text(four.read_text().replace("220 40 40", "255 0 0"))
    with pytest.raises(SettingError, match="classes colours .* there, .* here"):
        training.train(dataclasses.replace(config, num_steps=3, classes=str(other)))


@pytest.mark.parametrize("recipe", ["train", "train_msc", "fine_tune"])
def test_every_training_script_takes_a_classes_file(classes_file, recipe):
    from deeplab_resnet.cli import train_flags
    from deeplab_resnet.training.config import get_recipe
    args = train_flags.build_parser(get_recipe(recipe)).parse_args(["--classes", str(classes_file)])
    config = train_flags.config_from_args(args)
    assert (config.num_classes, config.class_names, config.class_colours) == (3, NAMES, COLOURS)


def test_the_training_summaries_draw_labels_in_the_classes_colours():
    from deeplab_resnet.model.network import IMG_MEAN
    from deeplab_resnet.training.summaries import image_strips
    classes = Classes(NAMES, COLOURS)
    images = np.zeros((1, 2, 2, 3), np.float32) - np.asarray(IMG_MEAN, np.float32)
    labels = np.array([[[0, 1], [2, 255]]])
    strips = image_strips(images, labels, labels, 255, 1, classes.palette)
    assert strips[0, :, 2:4].reshape(-1, 3).tolist() == [[0, 0, 0], [255, 0, 0], [0, 128, 255],
                                                         [224, 224, 192]]
