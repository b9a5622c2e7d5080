"""evaluate.py: mean IoU against an independent count, palette labels, flags, bad inputs."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import save_model, tiny_model
from deeplab_resnet.data.images import read_image
from deeplab_resnet.data.palette import save_label_png
from deeplab_resnet import cli
from deeplab_resnet.predict import prediction as predict
from deeplab_resnet.cli import evaluate

NUM_CLASSES = 6
# Where the PASCAL VOC test server wants a submission's PNGs ("comp6": any training data).
VOC_SUBMISSION_FOLDER = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")
SIZES = [(40, 50), (33, 47), (52, 36)]
# Classes present per image: none has them all, class 4 is in no label (but predicted),
# class 5 in no label and, by its very negative bias, never predicted.
CLASSES = [(0, 1), (0, 2, 3), (1, 3)]


@pytest.fixture(scope="module")
def model():
    return tiny_model(NUM_CLASSES, seed=11, head_biases=[0.2, 0.1, 0.0, -0.1, -0.2, -1000.0])


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    return save_model(model, tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A VOC-like folder: JPEG images, palette label PNGs with 255 borders, a list file."""
    root = tmp_path_factory.mktemp("voc")
    (root / "JPEGImages").mkdir()
    (root / "SegmentationClassAug").mkdir()
    rng = np.random.default_rng(5)
    lines = []
    for i, ((h, w), classes) in enumerate(zip(SIZES, CLASSES)):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"img{i}.jpg")
        label = np.asarray(classes)[rng.integers(0, len(classes), (h, w))]
        label[:, :2] = 255  # an ignored border
        label[h // 2, :] = 255
        save_label_png(label, root / "SegmentationClassAug" / f"img{i}.png")
        lines.append(f"/JPEGImages/img{i}.jpg /SegmentationClassAug/img{i}.png")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return root


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(evaluate.main, argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def _args(dataset, ckpt, *extra):
    return ["--data-dir", str(dataset), "--data-list", str(dataset / "val.txt"),
            "--restore-from", ckpt, *extra]


def _independent_miou(label_paths, prediction_paths, num_classes, ignore=255):
    """Mean IoU from PNG files with plain numpy: per class TP, FP, FN over all pixels."""
    labels = np.concatenate([np.asarray(Image.open(p)).ravel() for p in label_paths])
    predictions = np.concatenate([np.asarray(Image.open(p)).ravel() for p in prediction_paths])
    valid = labels != ignore
    ious = []
    for c in range(num_classes):
        tp = np.sum(valid & (labels == c) & (predictions == c))
        fp = np.sum(valid & (labels != c) & (predictions == c))
        fn = np.sum(valid & (labels == c) & (predictions != c))
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
    return float(np.mean(ious)), np.sum(valid)


def test_mean_iou_equals_an_independent_count_from_the_saved_pngs(dataset, ckpt, tmp_path,
                                                                   capsys):
    preds, report = tmp_path / "preds", tmp_path / "report.json"
    code, out, err = _run(_args(dataset, ckpt, "--save-dir", str(preds), "--json-output",
                                str(report)), capsys)
    assert code == 0
    labels = [dataset / "SegmentationClassAug" / f"img{i}.png" for i in range(3)]
    predictions = [preds / f"img{i}.png" for i in range(3)]
    for path, (h, w) in zip(predictions, SIZES):
        image = Image.open(path)
        assert image.mode == "P" and image.size == (w, h)
    expected, scored = _independent_miou(labels, predictions, NUM_CLASSES)
    last = out.strip().splitlines()[-1]
    assert last == f"Mean IoU: {expected:.4f}"
    result = json.loads(report.read_text())
    assert result["mean_iou"] == pytest.approx(expected, abs=1e-12)
    assert result["per_class_iou"]["class_5"] is None  # absent: not in the mean
    assert result["per_class_iou"]["class_4"] == 0.0  # predicted only: in the mean
    assert np.sum(result["confusion_matrix"]) == scored == result["num_pixels"]
    assert result["settings"]["images"] == 3 and result["settings"]["flip"] is False
    assert {"pixel_accuracy", "mean_class_accuracy", "frequency_weighted_iou",
            "per_class_iou"} <= set(result)
    assert "Pixel accuracy:" in out and "Mean class accuracy:" in out
    assert "Frequency-weighted IoU:" in out
    assert err == ""  # not a terminal: no progress bar, stderr keeps only messages


def test_palette_labels_are_read_as_class_indices(dataset, ckpt, tmp_path, capsys):
    # The network's own predictions, stored as labels under a palette whose colours have
    # nothing to do with the indices, must score a perfect 1.0.
    preds = tmp_path / "preds"
    assert _run(_args(dataset, ckpt, "--save-dir", str(preds)), capsys)[0] == 0
    (tmp_path / "labels").mkdir()
    palette = np.random.default_rng(0).integers(0, 256, 256 * 3)
    lines = []
    for i in range(3):
        values = np.asarray(Image.open(preds / f"img{i}.png"))
        assert len(np.unique(values)) > 1
        label = Image.fromarray(values, mode="P")
        label.putpalette(palette.tolist())
        label.save(tmp_path / "labels" / f"img{i}.png")
        assert not np.array_equal(np.asarray(label.convert("RGB"))[..., 0], values)
        lines.append(f"/JPEGImages/img{i}.jpg /labels/img{i}.png")
    (tmp_path / "JPEGImages").symlink_to(dataset / "JPEGImages")
    (tmp_path / "list.txt").write_text("\n".join(lines))
    code, out, _ = _run(["--data-list", str(tmp_path / "list.txt"), "--restore-from", ckpt,
                         "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and "Pixel accuracy: 1.0000" in out
    assert out.strip().splitlines()[-1] == "Mean IoU: 1.0000"


def test_protocol_flags_reach_the_predictor_and_num_steps_limits(model, dataset, ckpt,
                                                                 tmp_path, capsys):
    preds = tmp_path / "preds"
    code, _, _ = _run(_args(dataset, ckpt, "--save-dir", str(preds), "--num-steps", "2",
                            "--flip", "--scales", "1.0,0.5", "--deeplab-protocol",
                            "--pad-size", "57"), capsys)
    assert code == 0
    assert sorted(os.listdir(preds)) == ["img0.png", "img1.png"]
    predictor = predict.Predictor(model, scales=(1.0, 0.5), flip=True, deeplab_protocol=True,
                                  pad_size=57)
    for i in range(2):
        expected = predictor(read_image(dataset / "JPEGImages" / f"img{i}.jpg")).labels
        np.testing.assert_array_equal(np.asarray(Image.open(preds / f"img{i}.png")), expected)


def _one_line_error(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0]


def test_label_value_out_of_range_names_the_file(dataset, ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    label = np.zeros(SIZES[0], np.uint8)
    label[3, 3] = 7
    save_label_png(label, bad)
    (tmp_path / "JPEGImages").symlink_to(dataset / "JPEGImages")
    (tmp_path / "list.txt").write_text("/JPEGImages/img0.jpg /bad.png\n")
    code, _, err = _run(["--data-dir", str(tmp_path), "--data-list", str(tmp_path / "list.txt"),
                         "--restore-from", ckpt], capsys)
    _one_line_error(code, err, str(bad), "label values 7", "ignore label 255")


def test_bad_inputs_are_one_line_errors(dataset, ckpt, tmp_path, capsys):
    list_file = tmp_path / "list.txt"
    list_file.write_text("/JPEGImages/img0.jpg /SegmentationClassAug/img1.png\n")
    code, _, err = _run(["--data-dir", str(dataset), "--data-list", str(list_file),
                         "--restore-from", ckpt], capsys)
    _one_line_error(code, err, "img1.png", "50x40")

    list_file.write_text("/JPEGImages/img0.jpg /SegmentationClassAug/missing.png\n")
    code, _, err = _run(["--data-dir", str(dataset), "--data-list", str(list_file),
                         "--restore-from", ckpt], capsys)
    _one_line_error(code, err, "missing.png", "no such file")

    code, _, err = _run(_args(dataset, str(tmp_path / "nockpt")), capsys)
    _one_line_error(code, err, "nockpt", "no such checkpoint")

    code, _, err = _run(_args(dataset, ckpt, "--num-classes", "21"), capsys)
    _one_line_error(code, err, f"{NUM_CLASSES} classes", "--num-classes 21")

    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = _run(_args(dataset, ckpt, "--json-output", str(blocker / "r.json")), capsys)
    _one_line_error(code, err, "--json-output")


def test_class_names_label_the_report(dataset, ckpt, capsys):
    names = ",".join(f"thing{i}" for i in range(NUM_CLASSES))
    code, out, _ = _run(_args(dataset, ckpt, "--class-names", names), capsys)
    assert code == 0 and "thing3" in out and "class_3" not in out
    code, _, err = _run(_args(dataset, ckpt, "--class-names", "a,b"), capsys)
    _one_line_error(code, err, "--class-names", f"{NUM_CLASSES} classes")


def test_a_list_without_labels_writes_the_voc_submission_without_scores(tmp_path, capsys):
    """The VOC test list (image paths only) with --voc-submission: the test server's PNGs,
    no metrics, and it says so; without an output to write, it is refused."""
    voc = tiny_model(21, seed=4, head_biases=np.linspace(-0.5, 0.5, 21))
    voc_ckpt = save_model(voc, tmp_path / "ckpt" / "voc")
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    rng = np.random.default_rng(2)
    names = ["2008_000006", "2008_000011"]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(
            root / "JPEGImages" / f"{name}.jpg")
    test_list = tmp_path / "test.txt"
    test_list.write_text("".join(f"/JPEGImages/{name}.jpg\n" for name in names))
    argv = ["--data-dir", str(root), "--data-list", str(test_list), "--restore-from", voc_ckpt]
    code, out, _ = _run(argv + ["--voc-submission", str(tmp_path / "sub")], capsys)
    assert code == 0
    folder = tmp_path / "sub" / VOC_SUBMISSION_FOLDER
    assert sorted(os.listdir(folder)) == [f"{name}.png" for name in names]
    for name in names:
        png = Image.open(folder / f"{name}.png")
        assert png.mode == "P"
        expected = predict.Predictor(voc)(read_image(root / "JPEGImages" / f"{name}.jpg"))
        np.testing.assert_array_equal(np.asarray(png), expected.labels)
    assert "Mean IoU" not in out
    devices_line, weights_line, prediction_line, out = out.strip().split("\n", 3)
    assert devices_line.startswith("devices: ") and weights_line.startswith("weights: ")
    assert prediction_line == "prediction: fp32, scales 1.0; 2 images"
    assert out == f"2 images predicted, not scored (the list names no labels); label " \
                          f"PNGs in: {folder}"

    code, out, err = _run(argv, capsys)
    assert code == 2 and "names no label files, so there is nothing to score" in err
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(f"/JPEGImages/{names[0]}.jpg\n/JPEGImages/{names[1]}.jpg /x.png\n")
    code, _, err = _run(["--data-dir", str(root), "--data-list", str(mixed), "--restore-from",
                         voc_ckpt, "--save-dir", str(tmp_path / "p")], capsys)
    assert code == 2 and err.strip() == (f"error: {mixed}:2: names a label unlike the lines "
                                         "before it: every line names a label file or none does")


def test_voc_submission_beside_the_scores(dataset, tmp_path, capsys):
    voc_ckpt = save_model(tiny_model(21, seed=4), tmp_path / "ckpt" / "voc")
    code, out, _ = _run(_args(dataset, voc_ckpt, "--voc-submission", str(tmp_path / "sub"),
                              "--num-steps", "1"), capsys)
    assert code == 0 and out.strip().splitlines()[-1].startswith("Mean IoU: ")
    assert os.listdir(tmp_path / "sub" / VOC_SUBMISSION_FOLDER) == ["img0.png"]


def test_first_lines_say_what_was_loaded(dataset, ckpt, capsys):
    code, out, _ = _run(_args(dataset, ckpt, "--flip", "--num-steps", "2"), capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("devices: ")
    assert lines[1] == f"weights: {ckpt} (tiny, {NUM_CLASSES} classes)"
    assert lines[2] == "prediction: fp32, scales 1.0, flip; 2 images"
    assert lines[-1].startswith("Mean IoU: ")


def test_progress_lines_off_a_terminal_show_the_running_mean_iou(dataset, ckpt, capsys):
    """A line at least every minute (the clock is injected: 30 s per image), none at the end."""
    from deeplab_resnet.predict import evaluation
    from deeplab_resnet.cli import progress
    from deeplab_resnet.predict.segmenter import Segmenter
    segmenter = Segmenter.load(ckpt)
    ticks = iter(range(0, 1000, 30))
    lines = progress.EvaluationLines(
        len(SIZES), lambda confusion: evaluation.Scores.from_confusion(confusion).mean_iou,
        clock=lambda: next(ticks))
    segmenter.evaluate(str(dataset), str(dataset / "val.txt"), progress=lines)
    first_two = segmenter.evaluate(str(dataset), str(dataset / "val.txt"), num_images=2)
    out = capsys.readouterr().out.strip().splitlines()  # progress goes to stdout (issue 26)
    assert out == [f"evaluate.py: image 2/3, running mean IoU {first_two.mean_iou:.4f}, "
                   "0.03 images/s, ETA 30 s"]
