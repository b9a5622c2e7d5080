"""The dataset preparation scripts on a small fake VOC2012 + SBD tree: in-process as each
script runs itself (`run(main)`), and each script once in a child process (--help, one bad
input), where its start-up and exit status are the point."""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import ROOT
from deeplab_resnet.data.datasets import VOC_PALETTE
from deeplab_resnet.data.palette import colorize, save_label_png
from deeplab_resnet.data.labels import read_label

DATASET = ROOT / "dataset"
sys.path.insert(0, str(DATASET))  # the scripts import their neighbours, as when run there

VOC_TRAIN = ["2007_000032", "2007_000039", "2008_000002"]
VOC_VAL = ["2007_000033", "2008_000009"]
# SBD's own split overlaps VOC val (2007_000033) and VOC train (2007_000039):
# the first must be dropped from train_aug, the second listed once.
SBD_TRAIN = ["2008_000003", "2007_000033", "2008_000010"]
SBD_VAL = ["2008_000004", "2007_000039"]
TRAIN_AUG = sorted({"2007_000032", "2007_000039", "2008_000002", "2008_000003",
                    "2008_000004", "2008_000010"})
H, W = 6, 8


def run_process(name, *args):
    """The script `name` in a child process."""
    # The tools import the installed package; make it this checkout's.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(DATASET / name), *map(str, args)],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def run_script(capfd):
    """Runs the script `name` in-process as it runs itself (`run(main)`, at the fd level);
    returns what `run_process` returns."""
    def run(name, *args):
        script = importlib.import_module(name.removesuffix(".py"))
        argv = [str(a) for a in args]
        capfd.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            script.run(script.main, argv)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess([name, *argv], exit_info.value.code, out, err)
    return run


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def voc_label(seed):
    """A label map using classes 0..20 and 255 on a border row, like VOC's."""
    labels = np.random.default_rng(seed).integers(0, 21, (H, W)).astype(np.uint8)
    labels[0] = 255
    return labels


def sbd_label(seed):
    return np.random.default_rng(1000 + seed).integers(0, 21, (H, W)).astype(np.uint8)


def write_lines(path, names, shuffle_seed=0):
    names = list(names)
    np.random.default_rng(shuffle_seed).shuffle(names)  # the tools must not rely on order
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names) + "\n")


def write_mat(path, segmentation):
    scipy.io.savemat(path, {"GTcls": {"Segmentation": segmentation,
                                      "CategoriesPresent": np.unique(segmentation)}},
                     do_compression=True)


@pytest.fixture
def tree(tmp_path):
    """VOCdevkit/VOC2012 and benchmark_RELEASE/dataset with the names above."""
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", sbd / "cls", sbd / "img"):
        folder.mkdir(parents=True)
    write_lines(voc / "ImageSets" / "Segmentation" / "train.txt", VOC_TRAIN)
    write_lines(voc / "ImageSets" / "Segmentation" / "val.txt", VOC_VAL)
    write_lines(sbd / "train.txt", SBD_TRAIN)
    write_lines(sbd / "val.txt", SBD_VAL)
    image = Image.fromarray(np.zeros((H, W, 3), np.uint8))
    for name in sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL)):
        image.save(voc / "JPEGImages" / f"{name}.jpg")
    for i, name in enumerate(VOC_TRAIN + VOC_VAL):
        save_label_png(voc_label(i), voc / "SegmentationClass" / f"{name}.png")
    for i, name in enumerate(SBD_TRAIN + SBD_VAL):
        write_mat(sbd / "cls" / f"{name}.mat", sbd_label(i))
        image.save(sbd / "img" / f"{name}.jpg")
    return voc, sbd


def read_list(path):
    return path.read_text().splitlines()


# ---- build_voc_lists.py ----

def test_lists_train_aug_set_arithmetic_and_format(tree, tmp_path, run_script):
    voc, sbd = tree
    out = tmp_path / "lists"
    assert run_script("convert_sbd.py", "--voc-root", voc, "--sbd-root", sbd).returncode == 0
    result = run_script("build_voc_lists.py", "--voc-root", voc, "--sbd-root", sbd,
                        "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert read_list(out / "train.txt") == [
        f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in TRAIN_AUG]
    assert read_list(out / "val.txt") == [
        f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in sorted(VOC_VAL)]
    assert f"{len(TRAIN_AUG)} images" in result.stdout
    assert f"{len(VOC_VAL)} images" in result.stdout
    assert "VOC2012 train 3, val 2; SBD train 3, val 2" in result.stdout
    assert not (out / "train_voc.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["train.txt", "val.txt"]  # no temp files left


def test_lists_are_deterministic(tree, tmp_path, run_script):
    voc, sbd = tree
    first, second = tmp_path / "a", tmp_path / "b"
    for out, seed in ((first, 1), (second, 2)):
        # Same names, different line order in the input lists.
        write_lines(sbd / "train.txt", SBD_TRAIN, shuffle_seed=seed)
        write_lines(voc / "ImageSets" / "Segmentation" / "val.txt", VOC_VAL, shuffle_seed=seed)
        result = run_script("build_voc_lists.py", "--voc-root", voc, "--sbd-root", sbd,
                            "--output-dir", out, "--skip-label-check")
        assert result.returncode == 0, result.stderr
    for name in ("train.txt", "val.txt"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_lists_without_sbd_use_voc_labels(tree, tmp_path, run_script):
    voc, _ = tree
    out = tmp_path / "lists"
    # VOCdevkit (the folder above VOC2012) is accepted too.
    result = run_script("build_voc_lists.py", "--voc-root", voc.parent, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert read_list(out / "train_voc.txt") == [
        f"/JPEGImages/{n}.jpg /SegmentationClass/{n}.png" for n in sorted(VOC_TRAIN)]
    assert len(read_list(out / "val.txt")) == len(VOC_VAL)
    assert not (out / "train.txt").exists()


def test_lists_missing_image_names_the_first(tree, tmp_path, run_script):
    voc, sbd = tree
    (voc / "JPEGImages" / "2008_000010.jpg").unlink()
    (voc / "JPEGImages" / "2008_000004.jpg").unlink()
    result = run_script("build_voc_lists.py", "--voc-root", voc, "--sbd-root", sbd,
                        "--output-dir", tmp_path / "lists", "--skip-label-check")
    assert_one_line_error(result, "2 of", "2008_000004.jpg")
    assert not (tmp_path / "lists").exists()


def test_lists_missing_labels_point_to_convert_sbd(tree, tmp_path, run_script):
    voc, sbd = tree
    result = run_script("build_voc_lists.py", "--voc-root", voc, "--sbd-root", sbd,
                        "--output-dir", tmp_path / "lists")
    assert_one_line_error(result, "SegmentationClassAug", "convert_sbd.py")


@pytest.mark.parametrize("breakage, fragment", [
    ("no_voc_val", "VOC val list"),
    ("no_sbd_train", "SBD train list"),
    ("class_list", "expected one image name per line"),
])
def test_lists_bad_inputs(tree, tmp_path, breakage, fragment, run_script):
    voc, sbd = tree
    if breakage == "no_voc_val":
        (voc / "ImageSets" / "Segmentation" / "val.txt").unlink()
    elif breakage == "no_sbd_train":
        (sbd / "train.txt").unlink()
    else:
        (sbd / "val.txt").write_text("2008_000004  1\n")  # a per-class list, not a split
    result = run_script("build_voc_lists.py", "--voc-root", voc, "--sbd-root", sbd,
                        "--output-dir", tmp_path / "lists", "--skip-label-check")
    assert_one_line_error(result, fragment)


def test_lists_bad_voc_root(tmp_path):
    result = run_process("build_voc_lists.py", "--voc-root", tmp_path / "nowhere")
    assert_one_line_error(result, "--voc-root", "no such folder")


# ---- convert_sbd.py ----

def test_convert_sbd_keeps_voc_labels_and_values(tree, run_script):
    voc, sbd = tree
    # benchmark_RELEASE (the folder above dataset/) is accepted too.
    result = run_script("convert_sbd.py", "--voc-root", voc, "--sbd-root", sbd.parent)
    assert result.returncode == 0, result.stderr
    out = voc / "SegmentationClassAug"
    names = set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL)
    assert sorted(p.stem for p in out.iterdir()) == sorted(names)
    assert "5 labels copied" in result.stdout
    assert "5 labels, 3 converted, 2 skipped" in result.stdout
    assert "8 labels ->" in result.stdout

    for i, name in enumerate(VOC_TRAIN + VOC_VAL):
        # Both VOC and SBD label 2007_000033 and 2007_000039: VOC's wins,
        # with its 255 border intact.
        np.testing.assert_array_equal(read_label(out / f"{name}.png"), voc_label(i))
    for i, name in enumerate(SBD_TRAIN + SBD_VAL):
        if name not in VOC_TRAIN + VOC_VAL:
            np.testing.assert_array_equal(read_label(out / f"{name}.png"), sbd_label(i))

    image = Image.open(out / "2008_000003.png")
    assert image.mode == "P"
    palette = np.array(image.getpalette(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette[:21], VOC_PALETTE[:21])


@pytest.mark.parametrize("content, fragment", [
    (b"this is not a mat file" * 4, "not a readable MATLAB file"),
    (None, "no 'GTcls' struct"),
    ("values", "label values 37"),
])
def test_convert_sbd_bad_mat(tree, content, fragment, run_script):
    voc, sbd = tree
    bad = sbd / "cls" / "2009_000001.mat"
    if content is None:
        scipy.io.savemat(bad, {"GTinst": {"Segmentation": sbd_label(0)}})
    elif content == "values":
        write_mat(bad, np.full((H, W), 37, np.uint8))
    else:
        bad.write_bytes(content)
    result = run_script("convert_sbd.py", "--voc-root", voc, "--sbd-root", sbd)
    assert_one_line_error(result, str(bad), fragment)
    assert "Traceback" not in result.stderr


def test_convert_sbd_rgb_voc_label_is_refused(tree, run_script):
    voc, sbd = tree
    name = VOC_TRAIN[0]
    Image.fromarray(colorize(voc_label(0))).save(voc / "SegmentationClass" / f"{name}.png")
    result = run_script("convert_sbd.py", "--voc-root", voc, "--sbd-root", sbd)
    assert_one_line_error(result, f"{name}.png", "classes file")


# ---- convert_rgb_labels.py ----

def test_convert_rgb_round_trip(tmp_path, run_script):
    src, out = tmp_path / "rgb", tmp_path / "out"
    src.mkdir()
    labels = voc_label(3)
    Image.fromarray(colorize(labels)).save(src / "a.png")
    Image.fromarray(colorize(labels)).convert("RGBA").save(src / "b.png")
    save_label_png(labels, src / "c.png")  # already an index label: copied unchanged
    result = run_script("convert_rgb_labels.py", src, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    assert "2 RGB labels converted, 1 already index labels copied" in result.stdout
    for name in ("a", "b", "c"):
        assert Image.open(out / f"{name}.png").mode == "P"
        np.testing.assert_array_equal(read_label(out / f"{name}.png"), labels)


def test_convert_rgb_unknown_colour(tmp_path, run_script):
    rgb = colorize(voc_label(4))
    rgb[2, 5] = (1, 2, 3)
    path = tmp_path / "odd.png"
    Image.fromarray(rgb).save(path)
    result = run_script("convert_rgb_labels.py", path, "--output-dir", tmp_path / "out")
    assert_one_line_error(result, str(path), "(1, 2, 3)", "row 2, col 5")
    assert not (tmp_path / "out" / "odd.png").exists()


def test_convert_rgb_not_an_image(tmp_path, run_script):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG broken")
    result = run_script("convert_rgb_labels.py", path, "--output-dir", tmp_path / "out")
    assert_one_line_error(result, str(path), "not an image")


@pytest.mark.parametrize("script", ["build_voc_lists.py", "convert_sbd.py",
                                    "convert_rgb_labels.py", "prepare.py"])
def test_help(script):
    result = run_process(script, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


# ---- prepare.py (the other datasets: tests/test_datasets_prepare.py) ----

def test_prepare_voc_runs_both_tools(tree, tmp_path, run_script):
    voc, sbd = tree
    out = tmp_path / "lists"
    result = run_script("prepare.py", "voc", "--root", voc, "--sbd-root", sbd,
                        "--list-dir", out)
    assert result.returncode == 0, result.stderr
    assert "8 labels ->" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["voc_train.txt", "voc_val.txt"]
    assert read_list(out / "voc_train.txt") == [
        f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in TRAIN_AUG]
    assert len(read_list(out / "voc_val.txt")) == len(VOC_VAL)


def test_prepare_help_shows_the_layouts(run_script):
    result = run_script("prepare.py", "--help")
    for fragment in ("annotations/COCO_train2014_000000000077.mat",
                     "stuffthingmaps_trainval2017/train2017/", "_gtFine_labelIds.png",
                     "ADEChallengeData2016/", "benchmark_RELEASE/dataset"):
        assert fragment in result.stdout


def test_prepare_missing_label_is_one_line(tmp_path, run_script):
    (tmp_path / "leftImg8bit" / "train" / "aachen").mkdir(parents=True)
    (tmp_path / "gtFine").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(
        tmp_path / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png")
    result = run_script("prepare.py", "cityscapes", "--root", tmp_path, "--list-dir", tmp_path)
    # val/ has no images: the first thing found wrong is named, in one line.
    assert_one_line_error(result, "no images leftImg8bit/val/")
