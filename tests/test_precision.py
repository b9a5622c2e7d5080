"""--precision: bf16 inference agrees with fp32 on a fitted model, exports, and falls back
to fp32 with one message where the hardware has no bf16."""

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import save_model, tiny_model
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.palette import save_rgb_png
from deeplab_resnet import cli, defaults
from deeplab_resnet.runtime import precision
from deeplab_resnet.data import shapes
from deeplab_resnet.cli import evaluate, export, inference
from deeplab_resnet.model.fused import FusedDeepLab
from deeplab_resnet.model.geometry import shrink_labels
from deeplab_resnet.model.network import preprocess
from deeplab_resnet.predict.prediction import Predictor

NUM_CLASSES = len(shapes.CLASSES)
BF16_CPU = precision.Hardware(cpu_flags=frozenset({"avx512f", "avx512_bf16"}))
PLAIN_CPU = precision.Hardware(cpu_flags=frozenset({"avx2", "avx512f"}))


def _samples(seed, count, size=65):
    rng = np.random.default_rng(seed)
    return [shapes.make_sample(rng, size, size, 2) for _ in range(count)]


@pytest.fixture(scope="module")
def fitted_model():
    """A tiny net whose head is a least-squares probe of its features on shapes images:
    confident, mostly right answers, as a trained net gives (random nets' margins are tiny)."""
    model = tiny_model(NUM_CLASSES, seed=4)
    images, labels = (np.stack(t) for t in zip(*_samples(0, 8)))
    features = model.features(preprocess(images)).numpy()
    small = shrink_labels(tf.constant(labels.astype(np.int32)), features.shape[1:3]).numpy()
    valid = small != defaults.IGNORE_LABEL
    x = np.concatenate([features[valid], np.ones((int(valid.sum()), 1))], axis=1)
    y = 8.0 * np.eye(NUM_CLASSES)[small[valid]] - 4.0
    fit = np.linalg.solve(x.T @ x + 1e-2 * np.eye(x.shape[1]), x.T @ y).astype(np.float32)
    for name, var in model.params.items():
        if name.startswith("fc1_voc12"):
            var.assign(tf.zeros_like(var))
    kernel = np.zeros(model.params["fc1_voc12_c0/weights"].shape, np.float32)
    kernel[1, 1] = fit[:-1]
    model.params["fc1_voc12_c0/weights"].assign(kernel)
    model.params["fc1_voc12_c0/biases"].assign(fit[-1])
    return model


@pytest.mark.parametrize("float32_head", [False, True])
def test_bf16_predictor_agrees_with_fp32(fitted_model, float32_head):
    fp32 = Predictor(FusedDeepLab(fitted_model))
    bf16 = Predictor(FusedDeepLab(fitted_model, tf.bfloat16, float32_head=float32_head))
    agree = right = valid = total = 0
    for image, label in _samples(1, 4):
        reference, reduced = fp32(image), bf16(image)
        assert reduced.logits.dtype == np.float32 and reduced.probabilities.dtype == np.float32
        np.testing.assert_allclose(reduced.probabilities, reference.probabilities, atol=0.05)
        agree += int((reduced.labels == reference.labels).sum())
        total += label.size
        scored = label != defaults.IGNORE_LABEL
        right += int((reference.labels == label)[scored].sum())
        valid += int(scored.sum())
    assert right / valid > 0.8  # the probe is a real classifier: the check means something
    assert agree / total >= 0.99


def test_fused_network_computes_in_its_dtype(fitted_model):
    bf16 = FusedDeepLab(fitted_model, tf.bfloat16, float32_head=True)
    assert bf16.kernels["conv1"][0].dtype == tf.bfloat16
    assert bf16.kernels["fc1_voc12_c0"][0].dtype == tf.float32
    assert FusedDeepLab(fitted_model, tf.bfloat16).kernels["fc1_voc12_c0"][0].dtype == tf.bfloat16
    assert bf16(tf.zeros([1, 33, 33, 3])).dtype == tf.float32


def test_hardware_support_rules(tmp_path):
    assert BF16_CPU.supports("bf16") and not BF16_CPU.supports("fp16")
    assert not PLAIN_CPU.supports("bf16") and PLAIN_CPU.supports("fp32")
    assert precision.Hardware(frozenset({"amx_bf16"})).supports("bf16")
    assert precision.Hardware(frozenset({"avx512_fp16"})).supports("fp16")
    turing, ampere = precision.Hardware(gpu_capabilities=((7, 5),)), \
        precision.Hardware(gpu_capabilities=((8, 0),))
    assert turing.supports("fp16") and not turing.supports("bf16")
    assert ampere.supports("bf16") and ampere.supports("fp16")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert precision.cpu_flags(cpuinfo) == {"fpu", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "absent") == frozenset()


def test_resolve_falls_back_once_with_a_logged_warning(monkeypatch, capsys, caplog):
    monkeypatch.setattr(precision, "_warned", set())
    assert precision.resolve("bf16", BF16_CPU) == tf.bfloat16
    assert precision.resolve("fp32", PLAIN_CPU) == tf.float32
    assert caplog.records == []
    assert precision.resolve("bf16", PLAIN_CPU) == tf.float32
    assert precision.resolve("bf16", PLAIN_CPU) == tf.float32
    [record] = caplog.records
    assert record.levelname == "WARNING" and record.name == "deeplab_resnet.runtime.precision"
    assert "bf16" in record.getMessage() and "running fp32" in record.getMessage()
    assert precision.resolve("fp16", PLAIN_CPU) == tf.float32
    assert "fp16" in caplog.records[-1].getMessage()
    assert capsys.readouterr() == ("", "")  # the library logs; it does not print
    with pytest.raises(ValueError, match="unknown precision"):
        precision.resolve("int8", BF16_CPU)


def _run(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture(scope="module")
def ckpt(fitted_model, tmp_path_factory):
    return save_model(fitted_model, tmp_path_factory.mktemp("ckpt") / "model")


def test_cli_without_bf16_hardware_runs_fp32_and_says_so(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(precision, "detect", lambda: PLAIN_CPU)
    monkeypatch.setattr(precision, "_warned", set())
    image, label = _samples(2, 1)[0]
    save_rgb_png(image, tmp_path / "a.png")
    code, _, err = _run(inference.main, [str(tmp_path / "a.png"), ckpt, "--precision", "bf16",
                                         "--save-dir", str(tmp_path / "bf16")], capsys)
    assert code == 0 and err.count("no native bf16") == 1
    assert _run(inference.main, [str(tmp_path / "a.png"), ckpt,
                                 "--save-dir", str(tmp_path / "fp32")], capsys)[0] == 0
    np.testing.assert_array_equal(read_label(tmp_path / "bf16" / "a_mask.png"),
                                  read_label(tmp_path / "fp32" / "a_mask.png"))


def test_evaluate_reports_the_precision_it_ran(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(precision, "detect", lambda: BF16_CPU)
    data = shapes.make_shapes_dataset(tmp_path / "data", num_train=0, num_val=2, seed=5)
    report = tmp_path / "report.json"
    code, out, _ = _run(evaluate.main, ["--data-dir", data["root"], "--data-list", data["val"],
                                        "--restore-from", ckpt, "--precision", "bf16",
                                        "--json-output", str(report)], capsys)
    assert code == 0 and "Mean IoU" in out
    assert json.loads(report.read_text())["settings"]["precision"] == "bf16"


def test_bf16_export_round_trips(fitted_model, ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(precision, "detect", lambda: BF16_CPU)
    exported = tmp_path / "exported"
    assert _run(export.main, ["--restore-from", ckpt, "--output-dir", str(exported),
                              "--precision", "bf16"], capsys)[0] == 0
    serve = tf.saved_model.load(str(exported)).signatures["serving_default"]
    assert serve.structured_input_signature[1]["image"].dtype == tf.uint8
    assert {k: v.dtype for k, v in serve.structured_outputs.items()} == {
        "labels": tf.int32, "probabilities": tf.float32}
    graph = serve.graph.as_graph_def()
    nodes = [n for f in graph.library.function for n in f.node_def]
    assert any(n.op == "Conv2D" and n.attr["T"].type == tf.bfloat16.as_datatype_enum
               for n in nodes)
    expected = Predictor(FusedDeepLab(fitted_model, tf.bfloat16, float32_head=True))
    for image, _ in _samples(3, 2):
        out = serve(image=tf.constant(image))
        reference = expected(image)
        np.testing.assert_array_equal(out["labels"].numpy(), reference.labels)
        np.testing.assert_allclose(out["probabilities"].numpy(), reference.probabilities,
                                   atol=1e-6)
