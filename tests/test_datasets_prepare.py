"""dataset/prepare.py on small synthetic copies of each archive's layout.

The copies have the real archives' folder and file names, file formats (COCO-Stuff
10k's MATLAB v5 .mat files with S, names and captions; grayscale PNG label maps)
and value ranges; each test checks the documented mapping pixel by pixel.
"""

import os
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import ROOT
from deeplab_resnet.data import datasets
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.data.labels import read_label

sys.path.insert(0, str(ROOT / "dataset"))
import prepare  # noqa: E402  (a script folder, not a package)

H, W = 24, 32


def save_image(path, height=H, width=W, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def save_gray(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint8), mode="L").save(path)


def label_map(values, seed, height=H, width=W):
    """HxW map using every value of `values` at least once (then random ones)."""
    values = np.asarray(values)
    flat = np.random.default_rng(seed).choice(values, height * width)
    flat[:len(values)] = values
    return flat.reshape(height, width)


def lines(path):
    return path.read_text().splitlines()


# ---- the archives ----

COCO10K_TRAIN = ["COCO_train2014_000000000077", "COCO_train2014_000000000078"]
COCO10K_TEST = ["COCO_train2014_000000000081"]


def make_cocostuff10k(root):
    """cocostuff-10k-v1.1: images/, annotations/*.mat (S: 0 unlabeled, 1..182; with names,
    captions and the superpixels the stuff was annotated on), imageLists/."""
    names = COCO10K_TRAIN + COCO10K_TEST
    class_names = np.array(["unlabeled", *datasets.COCOSTUFF_CLASSES], dtype=object)
    maps = {}
    for i, name in enumerate(names):
        save_image(root / "images" / f"{name}.jpg", seed=i)
        # uint16, as MATLAB keeps ids above 127 comfortably; every id 0..182 occurs.
        maps[name] = label_map(range(183), seed=i).astype(np.uint16)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "annotations" / f"{name}.mat",
                         {"S": maps[name], "names": class_names[:, None],
                          "captions": np.array(["A photo.", "Two things."], dtype=object)[:, None],
                          "regionMapStuff": np.ones((H, W), np.uint16),
                          "regionLabelsStuff": np.array([[150]], np.uint8)},
                         do_compression=True)
    (root / "imageLists").mkdir()
    for list_name, listed in (("train", COCO10K_TRAIN), ("test", COCO10K_TEST),
                              ("all", names)):
        (root / "imageLists" / f"{list_name}.txt").write_text("\n".join(listed) + "\n")
    return maps


def make_cocostuff164k(root):
    """images/{train,val}2017/*.jpg, stuffthingmaps_trainval2017/{...}/*.png (0..181, 255)."""
    maps = {}
    for split, ids in (("train2017", ["000000000009", "000000000025"]),
                       ("val2017", ["000000000139"])):
        for i, image_id in enumerate(ids):
            save_image(root / "images" / split / f"{image_id}.jpg", seed=i)
            maps[split, image_id] = label_map([*range(182), 255], seed=i)
            save_gray(root / "stuffthingmaps_trainval2017" / split / f"{image_id}.png",
                      maps[split, image_id])
    return maps


CITYSCAPES = {"train": ["aachen_000000_000019", "bochum_000000_000313"],
              "val": ["frankfurt_000000_000294"]}


def make_cityscapes(root):
    """leftImg8bit/{split}/{city}/*_leftImg8bit.png, gtFine/... *_gtFine_labelIds.png and
    the other gtFine files (colour, instance ids, polygons) that must be left alone."""
    maps = {}
    for split, stems in CITYSCAPES.items():
        for i, stem in enumerate(stems):
            city = stem.split("_")[0]
            save_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", seed=i)
            gt = root / "gtFine" / split / city
            maps[stem] = label_map(range(34), seed=i)  # label ids 0..33
            save_gray(gt / f"{stem}_gtFine_labelIds.png", maps[stem])
            save_image(gt / f"{stem}_gtFine_color.png", seed=i)
            save_gray(gt / f"{stem}_gtFine_instanceIds.png", maps[stem])
            (gt / f"{stem}_gtFine_polygons.json").write_text("{}")
    return maps


def make_ade20k(parent):
    """ADEChallengeData2016/images/{training,validation}/*.jpg, annotations/.../*.png."""
    root = parent / "ADEChallengeData2016"
    maps = {}
    for folder, stems in (("training", ["ADE_train_00000001", "ADE_train_00000002"]),
                          ("validation", ["ADE_val_00000001"])):
        for i, stem in enumerate(stems):
            save_image(root / "images" / folder / f"{stem}.jpg", seed=i)
            maps[folder, stem] = label_map(range(151), seed=i)
            save_gray(root / "annotations" / folder / f"{stem}.png", maps[folder, stem])
    (root / "objectInfo150.csv").write_text("Idx,Ratio,Train,Val,Name\n")
    return root, maps


# ---- the mappings ----

def test_cocostuff10k_mat_ids_shift_down_and_unlabeled_is_ignored(tmp_path, capsys):
    root, lists = tmp_path / "cocostuff-10k-v1.1", tmp_path / "lists"
    maps = make_cocostuff10k(root)
    assert prepare.main(["cocostuff10k", "--root", str(root), "--list-dir", str(lists)]) == 0
    out = capsys.readouterr().out
    assert "train 2 images, val 1 images" in out and "182 classes" in out
    assert lines(lists / "cocostuff10k_train.txt") == [
        f"/images/{n}.jpg /labels_deeplab/{n}.png" for n in COCO10K_TRAIN]
    assert lines(lists / "cocostuff10k_val.txt") == [
        f"/images/{n}.jpg /labels_deeplab/{n}.png" for n in COCO10K_TEST]
    for name, ids in maps.items():
        labels = read_label(root / "labels_deeplab" / f"{name}.png")
        expected = np.where(ids == 0, 255, ids.astype(np.int64) - 1)
        np.testing.assert_array_equal(labels, expected)
    assert sorted(os.listdir(lists)) == ["cocostuff10k_train.txt", "cocostuff10k_val.txt"]


def test_cocostuff164k_keeps_182_classes(tmp_path, capsys):
    maps = make_cocostuff164k(tmp_path)
    prepare.main(["cocostuff164k", "--root", str(tmp_path), "--list-dir", str(tmp_path)])
    assert lines(tmp_path / "cocostuff164k_train.txt") == [
        f"/images/train2017/{i}.jpg /labels_deeplab/train2017/{i}.png"
        for i in ("000000000009", "000000000025")]
    assert len(lines(tmp_path / "cocostuff164k_val.txt")) == 1
    for (split, image_id), values in maps.items():
        written = tmp_path / "labels_deeplab" / split / f"{image_id}.png"
        np.testing.assert_array_equal(read_label(written), values)
        assert Image.open(written).mode == "P"
    assert "182 classes" in capsys.readouterr().out


def test_cocostuff164k_171_drops_the_unused_thing_ids(tmp_path, capsys):
    maps = make_cocostuff164k(tmp_path)
    prepare.main(["cocostuff164k", "--root", str(tmp_path), "--list-dir", str(tmp_path),
                  "--classes", "171"])
    assert "171 classes" in capsys.readouterr().out
    assert lines(tmp_path / "cocostuff164k_171_val.txt") == [
        "/images/val2017/000000000139.jpg /labels_deeplab_171/val2017/000000000139.png"]
    labels = read_label(tmp_path / "labels_deeplab_171" / "train2017" / "000000000009.png")
    values = maps["train2017", "000000000009"]
    # street sign (id 12, index 11) is unused; stop sign (index 12) becomes 11;
    # wood (181) becomes 170; 255 stays 255.
    for old, new in ((0, 0), (10, 10), (11, 255), (12, 11), (25, 255), (26, 24), (181, 170),
                     (255, 255)):
        assert set(labels[values == old]) == {new}, old
    assert set(np.unique(labels)) == set(range(171)) | {255}
    # The 171 names: COCO-Stuff's 182 without its 11 thing classes that no image has.
    names = datasets.COCOSTUFF171_CLASSES
    assert (len(names), names[11], names[170]) == (171, "stop sign", "wood")
    assert set(datasets.COCOSTUFF_CLASSES) - set(names) == {
        "street sign", "hat", "shoe", "eye glasses", "plate", "mirror", "window", "desk",
        "door", "blender", "hair brush"}


def test_cityscapes_label_ids_become_the_19_train_ids(tmp_path, capsys):
    maps = make_cityscapes(tmp_path)
    prepare.main(["cityscapes", "--root", str(tmp_path), "--list-dir", str(tmp_path)])
    assert lines(tmp_path / "cityscapes_val.txt") == [
        "/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png "
        "/labels_deeplab/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"]
    assert len(lines(tmp_path / "cityscapes_train.txt")) == 2
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    labels = read_label(tmp_path / "labels_deeplab" / "train" / "aachen" /
                        "aachen_000000_000019_gtFine_labelTrainIds.png")
    values = maps["aachen_000000_000019"]
    for label_id in range(34):
        assert set(labels[values == label_id]) == {expected.get(label_id, 255)}, label_id
    out = capsys.readouterr().out
    assert "train 2 images, val 1 images" in out and "--dataset cityscapes" in out
    assert "the full cityscapes release has 2975 train and 500 val" in out


def test_ade20k_other_is_ignored_and_classes_shift_down(tmp_path, capsys):
    root, maps = make_ade20k(tmp_path)
    # The folder above ADEChallengeData2016/ is accepted; the lists are relative to it.
    prepare.main(["ade20k", "--root", str(tmp_path), "--list-dir", str(tmp_path)])
    assert lines(tmp_path / "ade20k_train.txt")[0] == (
        "/images/training/ADE_train_00000001.jpg "
        "/labels_deeplab/training/ADE_train_00000001.png")
    for (folder, stem), values in maps.items():
        labels = read_label(root / "labels_deeplab" / folder / f"{stem}.png")
        np.testing.assert_array_equal(labels, np.where(values == 0, 255, values - 1))
    assert f"--data-dir {root}" in capsys.readouterr().out


# ---- stopping on bad input ----

def test_missing_label_stops_naming_the_first(tmp_path):
    make_cityscapes(tmp_path)
    gone = tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000313_gtFine_labelIds.png"
    gone.unlink()
    with pytest.raises(DeepLabError, match=f"1 of 3 labels missing, first: {gone}"):
        prepare.main(["cityscapes", "--root", str(tmp_path), "--list-dir", str(tmp_path)])
    assert not (tmp_path / "labels_deeplab").exists()  # checked before anything is written


def test_missing_image_of_a_listed_name(tmp_path):
    root = tmp_path / "cocostuff-10k-v1.1"
    make_cocostuff10k(root)
    (root / "images" / f"{COCO10K_TEST[0]}.jpg").unlink()
    with pytest.raises(DeepLabError, match="1 of 3 listed images missing, first: .*000081.jpg"):
        prepare.main(["cocostuff10k", "--root", str(root), "--list-dir", str(tmp_path)])


@pytest.mark.parametrize("content, message", [
    ("values", "label values 183, 200 are not COCO-Stuff ids"),
    ("no S", "no label map 'S'"),
    ("junk", "not a readable MATLAB file"),
])
def test_bad_cocostuff10k_annotation(tmp_path, content, message):
    root = tmp_path / "cocostuff-10k-v1.1"
    make_cocostuff10k(root)
    bad = root / "annotations" / f"{COCO10K_TRAIN[1]}.mat"
    if content == "values":
        scipy.io.savemat(bad, {"S": label_map([1, 183, 200], seed=0).astype(np.uint16)})
    elif content == "no S":
        scipy.io.savemat(bad, {"names": np.array(["unlabeled"], dtype=object)})
    else:
        bad.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(DeepLabError, match=message) as error:
        prepare.main(["cocostuff10k", "--root", str(root), "--list-dir", str(tmp_path)])
    assert str(bad) in str(error.value)


def test_out_of_range_ade20k_value(tmp_path):
    root, _ = make_ade20k(tmp_path)
    bad = root / "annotations" / "validation" / "ADE_val_00000001.png"
    save_gray(bad, label_map([0, 151], seed=0))
    with pytest.raises(DeepLabError, match="label values 151 are not ADE20K classes"):
        prepare.main(["ade20k", "--root", str(root), "--list-dir", str(tmp_path)])


@pytest.mark.parametrize("argv, message", [
    (["cityscapes"], "no leftImg8bit/ in it"),
    (["cocostuff164k"], "no images/ in it"),
])
def test_wrong_root_names_the_missing_folder(tmp_path, argv, message):
    with pytest.raises(DeepLabError, match=message):
        prepare.main([*argv, "--root", str(tmp_path), "--list-dir", str(tmp_path)])


def test_empty_split_is_an_error(tmp_path):
    root, _ = make_ade20k(tmp_path)
    for path in (root / "images" / "validation").iterdir():
        path.unlink()
    with pytest.raises(DeepLabError, match="no images images/validation/"):
        prepare.main(["ade20k", "--root", str(root), "--list-dir", str(tmp_path)])


@pytest.mark.parametrize("argv", [
    ["cityscapes", "--classes", "171"],
    ["ade20k", "--sbd-root", "x"],
    ["voc"],
])
def test_flags_for_another_dataset_are_refused(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare.main([*argv, "--root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")
