"""export.py: a SavedModel whose serving signature matches inference.py, loaded afresh."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import save_model, tiny_model
from deeplab_resnet import cli
from deeplab_resnet.cli import export, inference

NUM_CLASSES = 3

# Run by a fresh interpreter: only TensorFlow and the SavedModel, none of this project.
_SERVE = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    from PIL import Image
    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    image = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
    out = serve(image=tf.constant(image))
    np.save(sys.argv[3], out["labels"].numpy(), allow_pickle=False)
    np.save(sys.argv[4], out["probabilities"].numpy(), allow_pickle=False)
""")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    net = tiny_model(NUM_CLASSES, seed=13, head_biases=[0.1, 0.0, -0.1])
    return save_model(net, tmp_path_factory.mktemp("ckpt") / "model")


def _run(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_saved_model_in_a_fresh_process_matches_inference(ckpt, tmp_path, capsys):
    image_path = tmp_path / "scene.jpg"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (43, 58, 3), dtype=np.uint8)).save(
        image_path)
    exported = tmp_path / "exported"
    argv = ["--restore-from", ckpt, "--output-dir", str(exported)]
    assert _run(export.main, argv, capsys)[0] == 0
    assert (exported / "saved_model.pb").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]
    assert _run(inference.main, [str(image_path), ckpt, "--save-dir", str(tmp_path / "inf")],
                capsys)[0] == 0

    labels, probabilities = tmp_path / "labels.npy", tmp_path / "probabilities.npy"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", _SERVE, str(exported), str(image_path),
                             str(labels), str(probabilities)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    served = np.load(labels, allow_pickle=False)
    mask = np.asarray(Image.open(tmp_path / "inf" / "scene_mask.png"))
    assert served.shape == (43, 58) and served.dtype == np.int32
    assert len(np.unique(mask)) > 1
    np.testing.assert_array_equal(served, mask)
    served_probabilities = np.load(probabilities, allow_pickle=False)
    assert served_probabilities.shape == (43, 58, NUM_CLASSES)
    np.testing.assert_allclose(served_probabilities.sum(-1), 1.0, rtol=1e-5)


def test_existing_output_and_missing_checkpoint_leave_nothing(ckpt, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("keep me")
    code, _, err = _run(export.main, ["--restore-from", ckpt, "--output-dir", str(taken)], capsys)
    assert code == 2 and "already exists" in err and (taken / "file").read_text() == "keep me"

    code, _, err = _run(export.main, ["--restore-from", str(tmp_path / "missing"),
                                      "--output-dir", str(tmp_path / "new")], capsys)
    assert code == 2 and err.startswith("error: ") and "no such checkpoint" in err
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_the_precision_computed_in_is_recorded_and_an_unavailable_one_refused(
        ckpt, tmp_path, capsys, monkeypatch):
    """bf16 on a CPU said to have it: recorded in the SavedModel as what its graph computes
    in; fp16, which this CPU (no AVX512-FP16) lacks: refused in one line, nothing written."""
    from deeplab_resnet.runtime import precision
    monkeypatch.setattr(precision, "detect",
                        lambda: precision.Hardware(frozenset({"avx512_bf16"})))
    exported = tmp_path / "bf16"
    code, out, _ = _run(export.main, ["--restore-from", ckpt, "--output-dir", str(exported),
                                      "--precision", "bf16"], capsys)
    assert code == 0 and out.rstrip().endswith("computing in bf16)")
    assert tf.saved_model.load(str(exported)).precision.numpy() == b"bf16"

    code, _, err = _run(export.main, ["--restore-from", ckpt, "--output-dir",
                                      str(tmp_path / "fp16"), "--precision", "fp16"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "error: --precision fp16: this CPU has no native fp16 arithmetic, so the SavedModel "
        "would compute in fp32; export on a machine that has it (see --help), or give "
        "--precision fp32"]
    assert not (tmp_path / "fp16").exists()
