"""deeplab_resnet.data.datasets: class names and colours by dataset or count, and --dataset."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_command, save_model, tiny_model
from deeplab_resnet.data.datasets import VOC_PALETTE
from deeplab_resnet.data.palette import save_label_png
from deeplab_resnet.data import datasets
from deeplab_resnet.cli import evaluate, inference
from deeplab_resnet.errors import SettingError


def test_each_dataset_has_its_names_and_colours():
    names, palette = datasets.classes("cityscapes")
    assert len(names) == 19 and names[0] == "road" and names[18] == "bicycle"
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [128, 64, 128] and palette[13].tolist() == [0, 0, 142]
    assert palette[255].tolist() == [0, 0, 0]
    names, palette = datasets.classes("ade20k")
    assert (len(names), names[0], names[149]) == (150, "wall", "flag")
    assert palette[0].tolist() == [120, 120, 120] and palette[149].tolist() == [92, 0, 255]
    assert len({tuple(c) for c in palette[:150].tolist()}) == 149  # 'floor' repeats 'road'
    names, palette = datasets.classes("cocostuff")
    assert (len(names), names[0], names[181]) == (182, "person", "wood")
    np.testing.assert_array_equal(palette, VOC_PALETTE)
    names, palette = datasets.classes("voc")
    assert (len(names), names[0], names[1], names[20]) == (21, "background", "aeroplane",
                                                           "tvmonitor")
    # VOC's colour map: aeroplane dark red, person (15) pink, the object borders (255) cream.
    assert palette[1].tolist() == [128, 0, 0] and palette[15].tolist() == [192, 128, 128]
    assert palette[255].tolist() == [224, 224, 192]


def test_cocostuff_has_182_or_171_classes():
    names, _ = datasets.classes("cocostuff", 171)
    assert len(names) == 171 and "street sign" not in names and "hat" not in names
    assert datasets.classes("cocostuff", 182)[0][11] == "street sign"


@pytest.mark.parametrize("count, first", [(21, "background"), (182, "person"), (171, "person"),
                                          (19, "road"), (150, "wall"), (5, "class_0")])
def test_class_count_finds_the_dataset(count, first):
    names, palette = datasets.classes(num_classes=count)
    assert len(names) == count and names[0] == first


def test_user_names_win_and_counts_are_checked():
    assert datasets.classes("cityscapes", 19, ["x"] * 19)[0] == ["x"] * 19
    with pytest.raises(SettingError, match="gives 2 names for a model with 19") as error:
        datasets.classes("cityscapes", 19, ["a", "b"])
    assert error.value.fields == ("class_names",)
    with pytest.raises(SettingError, match="voc has 21 classes; the model has 19"):
        datasets.classes("voc", 19)
    with pytest.raises(SettingError, match="unknown"):
        datasets.classes("kitti")


@pytest.fixture(scope="module")
def cityscapes_model(tmp_path_factory):
    return save_model(tiny_model(19, head_biases=(np.arange(19) == 13) * 100.0),
                      str(tmp_path_factory.mktemp("ckpt") / "model"))


def test_inference_colours_masks_and_overlays_by_dataset(cityscapes_model, tmp_path, capfd):
    image = tmp_path / "street.png"
    Image.fromarray(np.full((40, 48, 3), 255, np.uint8)).save(image)
    code, _, err = run_command(inference.main, [str(image), cityscapes_model, "--save-dir",
                                                str(tmp_path), "--dataset", "cityscapes"], capfd)
    assert code == 0, err
    mask = Image.open(tmp_path / "street_mask.png")
    palette = np.array(mask.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette, datasets.classes("cityscapes")[1])
    assert set(np.unique(np.asarray(mask))) == {13}  # the head's bias makes every pixel "car"
    overlay = np.asarray(Image.open(tmp_path / "street_overlay.png"))
    # Cityscapes' car (0, 0, 142) blended half and half over white.
    assert overlay[0, 0].tolist() == [128, 128, 198]


def test_evaluate_names_the_dataset_classes_and_refuses_a_mismatch(cityscapes_model, tmp_path,
                                                                    capfd):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    save_label_png(np.full((40, 48), 13, np.uint8), tmp_path / "img" / "a_label.png")
    (tmp_path / "val.txt").write_text("/img/a.png /img/a_label.png\n")
    common = ["--data-dir", str(tmp_path), "--data-list", str(tmp_path / "val.txt"),
              "--restore-from", cityscapes_model]
    code, out, err = run_command(evaluate.main,
                                 [*common, "--json-output", str(tmp_path / "s.json")], capfd)
    assert code == 0, err
    assert "  car " in out  # 19 classes: recognised as Cityscapes without --dataset
    assert json.loads((tmp_path / "s.json").read_text())["per_class_iou"]["car"] == 1.0
    code, _, err = run_command(evaluate.main, [*common, "--dataset", "ade20k"], capfd)
    assert code == 2
    assert err == "error: --dataset ade20k has 150 classes; the model has 19\n"
