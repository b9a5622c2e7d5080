"""The Python API as a notebook uses it: only the top-level names of `deeplab_resnet`.

Loads a .caffemodel, a converted checkpoint and a 2017-port checkpoint, predicts from a path,
a PIL image and an array (the labels inference.py writes), evaluates (the mean IoU evaluate.py
prints) and converts, with nothing printed by the library, its log records captured, and the
process's signal handlers and umask as they were.
"""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import ROOT, process_state, tiny_model
from test_weights_files import write_port_checkpoint

from deeplab_resnet.data.images import read_image
import deeplab_resnet
from deeplab_resnet import cli
from deeplab_resnet.runtime import precision
from deeplab_resnet.data import shapes
from deeplab_resnet.cli import evaluate as evaluate_command
from deeplab_resnet.cli import inference as inference_command

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The same tiny network as a deploy prototxt + caffemodel and as the 2017 port's V1 file."""
    from deeplab_resnet.weights.caffe import deploy_prototxt, write_caffemodel
    root = tmp_path_factory.mktemp("weights")
    net = tiny_model(NUM_CLASSES, seed=21, head_biases=np.linspace(-0.3, 0.3, NUM_CLASSES))
    params = {name: var.numpy() for name, var in net.params.items()}
    prototxt = root / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt("tiny", NUM_CLASSES))
    return {"prototxt": str(prototxt),
            "caffemodel": write_caffemodel(str(prototxt), params, str(root / "tiny.caffemodel")),
            "port": write_port_checkpoint(params, root / "deeplab_resnet.ckpt", version=1)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=1, num_val=3,
                                      size=(40, 56), seed=3)


def _command(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    return out


def test_a_notebook_session(weights, data, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setattr(precision, "detect", precision.Hardware)  # no native bf16 here
    monkeypatch.setattr(precision, "_warned", set())
    caplog.set_level(logging.DEBUG, logger="deeplab_resnet")
    before = process_state()
    image_path = os.path.join(data["root"], "JPEGImages", "shape_0001.jpg")

    converted = deeplab_resnet.convert(weights["prototxt"], weights["caffemodel"],
                                       ckpt_path=tmp_path / "ckpt" / "tiny")
    assert (converted.variant, converted.num_classes) == ("tiny", NUM_CLASSES)
    segmenters = {"caffemodel": deeplab_resnet.Segmenter.load(weights["caffemodel"]),
                  "checkpoint": deeplab_resnet.Segmenter.load(tmp_path / "ckpt"),
                  "port": deeplab_resnet.Segmenter.load(weights["port"])}
    for seg in segmenters.values():
        assert (seg.model, seg.num_classes, seg.precision) == ("tiny", NUM_CLASSES, "fp32")
        assert seg.class_names == [f"class_{i}" for i in range(NUM_CLASSES)]
    assert segmenters["checkpoint"].weights == str(tmp_path / "ckpt" / "tiny")  # the latest
    rgb = np.asarray(Image.open(image_path).convert("RGB"))
    predictions = [segmenters["checkpoint"].predict(image_path),
                   segmenters["caffemodel"].predict(Image.open(image_path)),
                   segmenters["port"].predict(rgb),
                   segmenters["checkpoint"].predict(tf.constant(rgb))]
    predictions += list(segmenters["port"].predict_many([image_path, Image.open(image_path)]))
    labels = predictions[0].labels
    assert labels.shape == rgb.shape[:2] and len(np.unique(labels)) > 1
    for prediction in predictions[1:]:
        np.testing.assert_array_equal(prediction.labels, labels)
        np.testing.assert_allclose(prediction.logits, predictions[0].logits, rtol=1e-5,
                                   atol=1e-5)
    scores = segmenters["checkpoint"].evaluate(data["root"], data["val"])
    assert scores.confusion_matrix.shape == (NUM_CLASSES, NUM_CLASSES)
    assert scores.confusion_matrix.sum() == scores.num_pixels > 0
    fallback = deeplab_resnet.Segmenter.load(tmp_path / "ckpt", precision="bf16")
    assert fallback.precision == "fp32"
    with pytest.raises(deeplab_resnet.BadFileError, match="missing") as info:
        deeplab_resnet.Segmenter.load(tmp_path / "missing")
    assert isinstance(info.value, deeplab_resnet.DeepLabError)

    assert capsys.readouterr() == ("", "")  # the library printed nothing...
    # (TensorFlow's own logger may warn of retracing when many predictors were made.)
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and r.name.startswith("deeplab_resnet")]
    assert len(warnings) == 1 and "running fp32" in warnings[0].getMessage()  # ...it logged
    assert any(r.getMessage().startswith(f"loaded {weights['port']}: tiny, 4 classes")
               for r in caplog.records)
    # TF32 off, as the commands compute without --tf32 (the one setting `load` changes).
    assert process_state() == dict(before, tf32=False)

    # The commands give the same labels and the same mean IoU.
    _command(inference_command.main, [image_path, weights["port"], "--save-dir", tmp_path / "o"],
             capsys)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o" / "shape_0001_mask.png")),
                                  labels)
    out = _command(evaluate_command.main, ["--data-dir", data["root"], "--data-list", data["val"],
                                           "--restore-from", weights["caffemodel"]], capsys)
    assert out.strip().splitlines()[-1] == f"Mean IoU: {scores.mean_iou:.4f}"
    assert out.strip().endswith(scores.report())


def test_images_in_every_form_the_commands_read(weights, tmp_path):
    """Grayscale, palette, RGBA and CMYK files, their PIL images and arrays: one conversion."""
    seg = deeplab_resnet.Segmenter.load(weights["port"])
    rgb = np.random.default_rng(4).integers(0, 256, (33, 45, 3), dtype=np.uint8)
    for mode in ("L", "P", "RGBA", "CMYK"):
        path = tmp_path / f"image_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.fromarray(rgb).convert(mode).save(path)
        expected = seg.predict(read_image(path)).labels
        np.testing.assert_array_equal(seg.predict(str(path)).labels, expected)
        np.testing.assert_array_equal(seg.predict(Image.open(path)).labels, expected)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(seg.predict(gray).labels,
                                  seg.predict(np.dstack([gray] * 3)).labels)
    np.testing.assert_array_equal(seg.predict(np.dstack([rgb, np.full(gray.shape, 9, np.uint8)]))
                                  .labels, seg.predict(rgb).labels)
    for bad in (rgb.astype(np.float32), rgb[..., :2], [[1, 2]]):
        with pytest.raises(deeplab_resnet.SettingError, match="image") as info:
            seg.predict(bad)
        assert info.value.field == "image"


def test_settings_are_checked_before_the_weights_are_read(weights):
    for kwargs, field in (({"model": "resnet18"}, "variant"), ({"num_classes": 0}, "num_classes"),
                          ({"precision": "int8"}, "precision"), ({"scales": (1.0, -0.5)}, "scales"),
                          ({"crf": "yes"}, "crf"), ({"num_classes": 7}, "num_classes")):
        with pytest.raises(deeplab_resnet.SettingError) as info:
            deeplab_resnet.Segmenter.load(weights["caffemodel"], **kwargs)
        assert info.value.field == field, kwargs


def test_export_writes_what_export_py_writes(weights, tmp_path):
    seg = deeplab_resnet.Segmenter.load(weights["caffemodel"], flip=True)
    written = seg.export(tmp_path / "served")
    assert written == str(tmp_path / "served")
    serve = tf.saved_model.load(written).signatures["serving_default"]
    image = np.random.default_rng(5).integers(0, 256, (29, 38, 3), dtype=np.uint8)
    out = serve(image=tf.constant(image))
    np.testing.assert_array_equal(out["labels"].numpy(), seg.predict(image).labels)
    with pytest.raises(deeplab_resnet.SettingError, match="already exists"):
        seg.export(tmp_path / "served")


def test_predict_many_reads_ahead_and_stops_where_a_file_is_bad(weights, tmp_path):
    seg = deeplab_resnet.Segmenter.load(weights["port"])
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(good)
    results = seg.predict_many(iter([good, good, tmp_path / "absent.png", good]))
    assert [next(results).labels.shape for _ in range(2)] == [(20, 24), (20, 24)]
    with pytest.raises(deeplab_resnet.DeepLabError, match="absent.png"):
        next(results)

    consumed = []

    def paths():
        for _ in range(5):
            consumed.append(good)
            yield good
    results = seg.predict_many(paths(), prefetch=2)
    next(results)
    assert len(consumed) == 3  # the image predicted and the two decoded ahead of it
    results.close()


def test_convert_errors_name_its_arguments(weights, tmp_path):
    with pytest.raises(deeplab_resnet.SettingError, match="give ckpt_path, npz_path or code_path"):
        deeplab_resnet.convert(weights["prototxt"], weights["caffemodel"])
    with pytest.raises(deeplab_resnet.SettingError, match="npz_path need caffemodel"):
        deeplab_resnet.convert(weights["prototxt"], npz_path=tmp_path / "w.npz")
    done = deeplab_resnet.convert(weights["prototxt"], code_path=tmp_path / "net.py")
    assert done.code_path == str(tmp_path / "net.py") and done.ckpt_path is None
    assert os.listdir(tmp_path) == ["net.py"]


def test_import_stays_light_and_lists_the_api():
    """`import deeplab_resnet` loads neither TensorFlow nor the modules behind the API, and
    its log records stay silent until the application configures logging."""
    code = ("import logging, sys, deeplab_resnet\n"
            "logging.getLogger('deeplab_resnet.runtime.precision').warning('not shown')\n"
            "print('tensorflow' in sys.modules, sorted(deeplab_resnet.__all__))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    loaded, names = result.stdout.split(" ", 1)
    assert loaded == "False"
    for name in ("Segmenter", "Prediction", "Scores", "convert", "DeepLabError", "BadFileError",
                 "SettingError", "WriteError", "TrainConfig", "train", "TrainResult", "Callback",
                 "StopRequest"):
        assert repr(name) in names
    assert deeplab_resnet.Prediction._fields == ("labels", "probabilities", "logits")
    with pytest.raises(AttributeError):
        deeplab_resnet.no_such_name  # noqa: B018
