"""export.py --format tflite|onnx: files that compute TensorFlow's labels, carry the classes,
and run back through Segmenter.load, inference.py and evaluate.py (issue 29, items 1-4)."""

import re
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import run_command, tiny_model, with_trained_statistics
from deeplab_resnet import Segmenter
from deeplab_resnet.cli import evaluate, export, inference, train
from deeplab_resnet.data import shapes
from deeplab_resnet.data.lists import read_list
from deeplab_resnet.errors import DeepLabError, SettingError
from deeplab_resnet.weights import checkpoint

NAMES = ("sky", "sea", "sand", "rock", "boat")
SIZES = [(375, 500), (333, 517), (1, 1), (2, 3), (9, 17), (1024, 2048)]


def _litert():
    pytest.importorskip("ai_edge_litert", reason='needs the extra: pip install -e ".[tflite]"')


def _onnx():
    pytest.importorskip("onnxruntime", reason='needs the extra: pip install -e ".[onnx]"')
    pytest.importorskip("tf2onnx", reason='needs the extra: pip install -e ".[onnx]"')


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    net = tiny_model(len(NAMES), seed=13)
    params = with_trained_statistics(net, seed=5)
    return checkpoint.save_params(params, tmp_path_factory.mktemp("ckpt") / "model", "tiny",
                                  len(NAMES), class_names=NAMES)


@pytest.fixture(scope="module")
def segmenter(ckpt):
    return Segmenter.load(ckpt)


@pytest.fixture(scope="module")
def files(segmenter, tmp_path_factory):
    """{"tflite": path, "onnx": path}: any-size fp32 exports, each written when its extra is
    installed."""
    folder, out = tmp_path_factory.mktemp("exports"), {}
    for fmt, module in (("tflite", "ai_edge_litert"), ("onnx", "tf2onnx")):
        try:
            __import__(module)
        except ImportError:
            continue
        out[fmt] = segmenter.export(folder / f"model.{fmt}", fmt)
    return out


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_fp32_files_give_tensorflows_labels_at_every_size(fmt, segmenter, files):
    _litert() if fmt == "tflite" else _onnx()
    loaded = Segmenter.load(files[fmt])
    rng, seen = np.random.default_rng(4), set()
    for size in SIZES:
        image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        ours, theirs = segmenter.predict(image), loaded.predict(image)
        assert theirs.labels.shape == size and theirs.labels.dtype == np.int32
        assert (ours.labels == theirs.labels).mean() >= 0.999, size
        np.testing.assert_allclose(theirs.probabilities, ours.probabilities, atol=2e-3)
        assert theirs.logits.shape == ours.logits.shape
        seen.update(np.unique(ours.labels).tolist())
    assert len(seen) > 1  # the comparison is not between two constant maps


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_files_record_the_classes_and_colours(fmt, segmenter, files):
    _litert() if fmt == "tflite" else _onnx()
    loaded = Segmenter.load(files[fmt])
    assert loaded.class_names == list(NAMES) and loaded.num_classes == len(NAMES)
    assert loaded.model == "tiny"
    np.testing.assert_array_equal(loaded.palette, segmenter.palette)
    from deeplab_resnet.predict import litert, onnx_file
    meta = (litert.read_metadata(files[fmt]) if fmt == "tflite"
            else onnx_file.read_metadata(files[fmt]))
    assert meta["class_names"] == list(NAMES)
    assert meta["colors"] == np.asarray(segmenter.palette)[:len(NAMES)].tolist()


def test_onnx_states_its_resize_coordinates(files):
    _onnx()
    import onnx
    model = onnx.load(files["onnx"])
    modes = {attribute.s.decode() for node in model.graph.node if node.op_type == "Resize"
             for attribute in node.attribute if attribute.name == "coordinate_transformation_mode"}
    assert modes == {"asymmetric"}


def test_a_fixed_size_file_takes_that_size_only(segmenter, tmp_path):
    _litert()
    path = segmenter.export(tmp_path / "fixed.tflite", "tflite", input_size=(43, 58))
    loaded = Segmenter.load(path)
    image = np.random.default_rng(1).integers(0, 256, (43, 58, 3), dtype=np.uint8)
    assert (loaded.predict(image).labels == segmenter.predict(image).labels).mean() >= 0.999
    with pytest.raises(SettingError, match="takes only 43x58 images"):
        loaded.predict(image[:40])


def test_fp16_file_agrees_with_tensorflow(segmenter, tmp_path):
    _litert()
    loaded = Segmenter.load(segmenter.export(tmp_path / "half.tflite", "tflite",
                                             quantize="fp16"))
    image = np.random.default_rng(2).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    assert (loaded.predict(image).labels == segmenter.predict(image).labels).mean() >= 0.99
    assert loaded.precision == "fp16"


def test_settings_an_export_cannot_take_are_refused(segmenter, tmp_path):
    with pytest.raises(SettingError, match="needs representative images"):
        segmenter.export(tmp_path / "q.tflite", "tflite", quantize="int8")
    with pytest.raises(SettingError, match="only for --format tflite"):
        segmenter.export(tmp_path / "q.onnx", "onnx", quantize="fp16")
    with pytest.raises(SettingError, match="unknown"):
        segmenter.export(tmp_path / "q.x", "coreml")
    assert not list(tmp_path.iterdir())


def test_a_missing_extra_is_named(files, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    for fmt, extra in (("tflite", '".[tflite]"'), ("onnx", '".[onnx]"')):
        path = files.get(fmt)
        if path is None:
            path = tmp_path / f"absent.{fmt}"
            path.write_bytes(b"not a model")
        with pytest.raises(DeepLabError, match=re.escape(f"pip install -e {extra}")):
            Segmenter.load(path)


def test_commands_export_then_check_the_file(ckpt, tmp_path, capfd):
    _litert()
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (61, 77, 3), dtype=np.uint8)
                    ).save(image)
    model = tmp_path / "model.tflite"
    status, out, err = run_command(export.main, ["--restore-from", ckpt, "--format", "tflite",
                                                 "--output", model], capfd)
    assert status == 0, err
    assert "tflite written to" in out and model.exists()
    for weights, folder in ((ckpt, "tf"), (model, "lite")):
        status, _, err = run_command(inference.main, [image, weights, "--save-dir",
                                                      tmp_path / folder], capfd)
        assert status == 0, err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "lite" / "scene_mask.png")),
                                  np.asarray(Image.open(tmp_path / "tf" / "scene_mask.png")))
    status, _, err = run_command(export.main, ["--restore-from", ckpt, "--format", "tflite",
                                               "--quantize", "int8", "--output",
                                               tmp_path / "q.tflite"], capfd)
    assert status == 2 and "--calibration-list" in err and not (tmp_path / "q.tflite").exists()


@pytest.fixture(scope="module")
def shapes_net(tmp_path_factory):
    """(data, checkpoint) of a tiny net trained on the shapes data as the demo trains it."""
    folder = tmp_path_factory.mktemp("shapes")
    data = shapes.make_shapes_dataset(folder / "data", num_train=64, num_val=8, seed=0)
    try:
        train.main(["--model", "tiny", "--num-classes", str(len(shapes.CLASSES)),
                    "--class-names", ",".join(shapes.CLASSES), "--data-dir", data["root"],
                    "--data-list", data["train"], "--input-size", "64,64", "--batch-size", "10",
                    "--num-steps", "300", "--learning-rate", "0.001", "--save-pred-every", "300",
                    "--is-training", "--random-mirror", "--random-scale", "--random-seed", "0",
                    "--snapshot-dir", str(folder / "snapshots")])
    except SystemExit as exc:
        assert not exc.code
    return data, str(folder / "snapshots")


def test_int8_is_all_integer_runs_in_xnnpack_and_keeps_the_labels(shapes_net, tmp_path, capfd):
    _litert()
    data, snapshots = shapes_net
    model = tmp_path / "int8.tflite"
    status, _, err = run_command(export.main, [
        "--restore-from", snapshots, "--format", "tflite", "--quantize", "int8",
        "--calibration-list", data["train"], "--data-dir", data["root"], "--output", model], capfd)
    assert status == 0, err
    fp32, int8 = Segmenter.load(snapshots), Segmenter.load(model)
    interpreter = int8.predictor.runner.interpreter
    floats = [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] == np.float32]
    assert len(floats) == 2, floats  # the dequantized outputs: probabilities and logits
    images, _ = read_list(data["root"], data["val"])
    agreement = [(fp32.predict(p).labels == int8.predict(p).labels).mean() for p in images]
    nodes = interpreter._interpreter  # delegated once run: XNNPACK took the network
    names = [nodes.NodeName(i) for i in range(nodes.NumNodes())]
    assert "DELEGATE" in names and "CONV_2D" in names
    assert np.mean(agreement) >= 0.99, agreement
    ours = fp32.evaluate(data["root"], data["val"]).mean_iou
    status, out, err = run_command(evaluate.main, ["--data-dir", data["root"], "--data-list",
                                                   data["val"], "--restore-from", model], capfd)
    assert status == 0, err
    theirs = float(out.strip().splitlines()[-1].split(":")[1])
    assert theirs == pytest.approx(int8.evaluate(data["root"], data["val"]).mean_iou, abs=1e-4)
    assert ours > 0.6 and abs(ours - theirs) <= 0.01, (ours, theirs)
