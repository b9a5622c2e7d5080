"""inference.py: masks, overlays and raw logits for an image or a folder; bad inputs."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import save_model, tiny_model
from deeplab_resnet.data.images import read_image
from deeplab_resnet.data.palette import overlay
from deeplab_resnet import cli
from deeplab_resnet.predict import prediction as predict
from deeplab_resnet.cli import inference
from deeplab_resnet.model.network import output_size, preprocess

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def model():
    return tiny_model(NUM_CLASSES, seed=7, head_biases=np.linspace(-0.3, 0.3, NUM_CLASSES))


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    return save_model(model, tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "street.png"
    pixels = np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def _run(argv, capsys):
    """Runs inference.py in-process as the command line would; (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(inference.main, argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_single_image_writes_palette_mask_overlay_and_raw_logits(model, ckpt, image_file,
                                                                  tmp_path, capsys):
    code, _, _ = _run([image_file, ckpt, "--save-dir", str(tmp_path), "--save-logits"], capsys)
    assert code == 0
    assert sorted(os.listdir(tmp_path)) == ["street_logits.npy", "street_mask.png",
                                            "street_overlay.png"]
    image = read_image(image_file)
    mask = Image.open(tmp_path / "street_mask.png")
    assert mask.mode == "P" and mask.size == (61, 45)
    assert mask.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
    np.testing.assert_array_equal(np.asarray(mask), predict.Predictor(model)(image).labels)
    logits = np.load(tmp_path / "street_logits.npy", allow_pickle=False)
    assert logits.dtype == np.float32
    assert logits.shape == (output_size(45, "tiny"), output_size(61, "tiny"), NUM_CLASSES)
    expected = model(preprocess(tf.constant(image)[tf.newaxis]))[0].numpy()
    # inference.py runs the BN-folded network: same function, other rounding.
    assert np.abs(logits - expected).max() <= 1e-5 * np.abs(expected).max()
    drawn = np.asarray(Image.open(tmp_path / "street_overlay.png"))
    np.testing.assert_array_equal(drawn, overlay(image, np.asarray(mask)))


def test_folder_of_images_in_any_mode(model, ckpt, tmp_path, capsys):
    rng = np.random.default_rng(1)
    folder = tmp_path / "in"
    folder.mkdir()
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "a.jpg", quality=95)
    Image.fromarray(rgb[..., 0]).save(folder / "b.png")  # grayscale
    Image.fromarray(np.dstack([rgb, np.full((30, 40), 128, np.uint8)])).save(folder / "c.png")
    Image.fromarray(rgb).save(folder / "d.bmp")
    Image.fromarray(rgb).convert("P").save(folder / "e.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    code, stdout, _ = _run([str(folder), ckpt, "--save-dir", str(out)], capsys)
    assert code == 0 and stdout.count("_mask.png") == 5
    predictor = predict.Predictor(model)
    for name in ("a.jpg", "b.png", "c.png", "d.bmp", "e.png"):
        mask = np.asarray(Image.open(out / f"{os.path.splitext(name)[0]}_mask.png"))
        expected = predictor(read_image(str(folder / name)))
        np.testing.assert_array_equal(mask, expected.labels)
    assert not (out / "notes_mask.png").exists()


def test_flip_and_scales_flags_reach_the_predictor(model, ckpt, image_file, tmp_path, capsys):
    code, _, _ = _run([image_file, ckpt, "--save-dir", str(tmp_path), "--flip",
                       "--scales", "1.0,0.5"], capsys)
    assert code == 0
    expected = predict.Predictor(model, scales=(1.0, 0.5), flip=True)(read_image(image_file))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "street_mask.png")),
                                  expected.labels)


def _one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_checkpoint(image_file, tmp_path, capsys):
    code, _, err = _run([image_file, str(tmp_path / "nope"), "--save-dir", str(tmp_path / "o")],
                        capsys)
    _one_line_error(code, err, "nope", "no such checkpoint")


def test_num_classes_contradicting_the_checkpoint(ckpt, image_file, tmp_path, capsys):
    code, _, err = _run([image_file, ckpt, "--num-classes", "21", "--save-dir", str(tmp_path)],
                        capsys)
    _one_line_error(code, err, f"{NUM_CLASSES} classes", "--num-classes 21")
    assert os.listdir(tmp_path) == []
    # A refused checkpoint creates no output folder.
    code, _, err = _run([image_file, ckpt, "--num-classes", "21", "--save-dir",
                         str(tmp_path / "new")], capsys)
    assert code == 2 and not (tmp_path / "new").exists()


def test_non_image_file_leaves_no_output(ckpt, tmp_path, capsys):
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is text, not a JPEG")
    out = tmp_path / "out"
    code, _, err = _run([str(fake), ckpt, "--save-dir", str(out)], capsys)
    _one_line_error(code, err, str(fake), "not an image")
    assert not out.exists()  # made for this run, removed: it stayed empty


def _broken_folder(tmp_path):
    """A folder of three images, the middle one unreadable."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / name)
    (folder / "b.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    return folder


def test_keep_going_skips_unreadable_images_and_lists_them(ckpt, tmp_path, capsys):
    folder, out = _broken_folder(tmp_path), tmp_path / "out"
    code, _, err = _run([str(folder), ckpt, "--save-dir", str(out)], capsys)
    _one_line_error(code, err, "b.jpg", "--keep-going skips unreadable images")
    code, stdout, err = _run([str(folder), ckpt, "--save-dir", str(out), "--keep-going"],
                             capsys)
    assert code == 1
    assert sorted(os.listdir(out)) == ["a_mask.png", "a_overlay.png", "c_mask.png",
                                       "c_overlay.png"]
    lines = err.strip().splitlines()
    assert lines[0] == "1 unreadable image skipped (--keep-going):"
    assert lines[1].startswith(f"  {folder / 'b.jpg'}: ") and len(lines) == 2
    assert f"2 of 3 images segmented; masks, overlays in {out}" in stdout


def test_skip_existing_does_only_what_is_missing(ckpt, tmp_path, capsys):
    folder, out = _broken_folder(tmp_path), tmp_path / "out"
    (folder / "b.jpg").unlink()
    assert _run([str(folder), ckpt, "--save-dir", str(out)], capsys)[0] == 0
    os.remove(out / "c_overlay.png")
    before = os.stat(out / "a_mask.png").st_mtime_ns
    code, stdout, _ = _run([str(folder), ckpt, "--save-dir", str(out), "--skip-existing"],
                           capsys)
    assert code == 0 and "a_mask.png" not in stdout and "c_mask.png" in stdout
    assert os.stat(out / "a_mask.png").st_mtime_ns == before
    assert (out / "c_overlay.png").exists()
    assert "1 of 2 images segmented" in stdout and "1 skipped: their outputs exist" in stdout
    # With --save-logits the logits are outputs too: missing, so both images are redone.
    code, stdout, _ = _run([str(folder), ckpt, "--save-dir", str(out), "--skip-existing",
                            "--save-logits"], capsys)
    assert code == 0 and "2 of 2 images segmented; masks, overlays and logits" in stdout


def test_first_lines_say_what_was_loaded(ckpt, image_file, tmp_path, capsys):
    code, stdout, _ = _run([image_file, ckpt, "--save-dir", str(tmp_path), "--flip",
                            "--scales", "1.0,0.5"], capsys)
    lines = stdout.splitlines()
    assert code == 0 and lines[0].startswith("devices: ")
    assert lines[1] == f"weights: {ckpt} (tiny, {NUM_CLASSES} classes)"
    assert lines[2] == "prediction: fp32, scales 1.0,0.5, flip; 1 image"
    assert lines[-1] == f"1 of 1 image segmented; masks, overlays in {tmp_path}"


def test_output_folder_not_writable(ckpt, image_file, tmp_path, capsys):
    # A path below a regular file cannot be created, even by root.
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = _run([image_file, ckpt, "--save-dir", str(blocker / "out")], capsys)
    _one_line_error(code, err, "--save-dir", "cannot create folder")


def test_crf_without_pydensecrf_is_a_one_line_error(ckpt, image_file, tmp_path, capsys,
                                                    monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    code, _, err = _run([image_file, ckpt, "--crf", "--save-dir", str(tmp_path / "o")], capsys)
    _one_line_error(code, err, "pip install")


def test_command_line_error_has_no_traceback(image_file, tmp_path, root):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(root / "inference.py"), image_file,
                             str(tmp_path / "missing"), "--save-dir", str(tmp_path / "o")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_voc_submission_writes_the_test_server_layout(tmp_path, capsys, monkeypatch):
    """--voc-submission DIR: DIR/results/VOC2012/Segmentation/comp6_test_cls/<stem>.png, palette
    PNGs of class indices, for every image given and nothing in ./output/."""
    voc = tiny_model(21, seed=3, head_biases=np.linspace(-0.5, 0.5, 21))
    voc_ckpt = save_model(voc, tmp_path / "ckpt" / "voc")
    images = tmp_path / "test_images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for name, size in (("2008_000006", (40, 52)), ("2008_000011", (37, 33))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(
            images / f"{name}.jpg")
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run([str(images), voc_ckpt, "--voc-submission", "submission"], capsys)
    assert code == 0
    folder = tmp_path / "submission" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert sorted(os.listdir(folder)) == ["2008_000006.png", "2008_000011.png"]
    assert not (tmp_path / "output").exists()
    for name in ("2008_000006", "2008_000011"):
        png = Image.open(folder / f"{name}.png")
        assert png.mode == "P" and png.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
        expected = predict.Predictor(voc)(read_image(images / f"{name}.jpg")).labels
        np.testing.assert_array_equal(np.asarray(png), expected)
    assert f"VOC test-server results: submission/{folder.relative_to(tmp_path / 'submission')}" \
        in out
    # The test server scores VOC's 21 classes: another model is refused before any work.
    code, _, err = _run([str(images), voc_ckpt.replace("voc", "x"), "--voc-submission", "s"],
                        capsys)
    assert code == 2
    small = save_model(tiny_model(NUM_CLASSES), tmp_path / "ckpt" / "small")
    code, _, err = _run([str(images), small, "--voc-submission", "s2"], capsys)
    assert code == 2 and err.strip() == ("error: --voc-submission: the VOC test server scores "
                                         "VOC's 21 classes; this model has 4")
    assert not (tmp_path / "s2").exists()
