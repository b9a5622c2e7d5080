"""convert.py end to end: checkpoint/npz/code outputs, DeepLab recognition, eps folding, errors.

The command runs in-process (`run_command`); one bad input goes through the real script in a
child process, whose exit status and stderr are then the point.
"""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from caffe_fixtures import caffemodel_bytes, random_blobs, write_random_caffemodel
from conftest import run_command
from deeplab_resnet.weights import caffe
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.cli import convert as convert_command
from deeplab_resnet.weights.caffe import load_net
from deeplab_resnet.weights.conversion import convert
from deeplab_resnet.errors import DeepLabError
from kaffe import convert as kaffe_convert
from kaffe.errors import KaffeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*args):
    """convert.py in a child process: (exit status, stdout, stderr)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "convert.py"), *map(str, args)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny DeepLab net (prototxt with eps 1e-3, so folding applies) and a random caffemodel."""
    folder = tmp_path_factory.mktemp("tiny")
    text = caffe.deploy_prototxt("tiny", 3, input_size=33).replace(
        "use_global_stats: true", "use_global_stats: true\n    eps: 0.001")
    proto = folder / "tiny.prototxt"
    proto.write_text(text)
    model = folder / "tiny.caffemodel"
    blobs = write_random_caffemodel(proto, model, seed=4, bn_factor=999.98, calibrate=True,
                                    calibration=dict(size=33))
    return proto, model, blobs


def test_cli_writes_checkpoint_npz_and_code(tmp_path, tiny, capfd):
    proto, model, blobs = tiny
    code, _, err = run_command(convert_command.main, [
        proto, "--caffemodel", model, "--ckpt-path", tmp_path / "ckpt" / "tiny",
        "--data-output-path", tmp_path / "w.npz", "--code-output-path", tmp_path / "net.py"],
        capfd)
    assert code == 0, err
    prefix = tmp_path / "ckpt" / "tiny"
    assert checkpoint.read_meta(prefix) == ("tiny", 3)
    # The checkpoint loads with no flags; BN variances are folded to eps 1e-5.
    dl = checkpoint.load_weights(prefix)
    params = checkpoint.read_params(prefix)
    f = 999.98
    np.testing.assert_allclose(params["bn_conv1/variance"],
                               blobs["bn_conv1"][1] / np.float32(f) + 1e-3 - 1e-5, rtol=1e-5)
    np.testing.assert_allclose(params["bn_conv1/mean"], blobs["bn_conv1"][0] / np.float32(f),
                               rtol=1e-5)
    np.testing.assert_array_equal(params["conv1/weights"], blobs["conv1"][0].transpose(2, 3, 1, 0))
    # .npz: same arrays, no pickle.
    with np.load(tmp_path / "w.npz", allow_pickle=False) as data:
        assert sorted(data.files) == sorted(params)
        for key in data.files:
            np.testing.assert_array_equal(data[key], params[key])
    with zipfile.ZipFile(tmp_path / "w.npz") as z:
        assert all(n.endswith(".npy") for n in z.namelist())
    # The emitted code (true eps 1e-3 inside) gives the DeepLab model's output from either file.
    import importlib.util
    spec = importlib.util.spec_from_file_location("tiny_net", tmp_path / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.BN_EPS["bn_conv1"] == 1e-3
    x = np.random.default_rng(0).normal(0, 50, (1, 41, 40, 3)).astype(np.float32)
    ref = dl(x).numpy()
    for source in (prefix, tmp_path / "w.npz"):
        out = module.Net().load(source)(x)["fc1_voc12"].numpy()
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "net.py", "w.npz"]  # no temp files left


def test_code_only_without_caffemodel(tmp_path, tiny, capfd):
    proto, _, _ = tiny
    code, _, err = run_command(convert_command.main,
                               [proto, "--code-output-path", tmp_path / "net.py"], capfd)
    assert code == 0, err
    text = (tmp_path / "net.py").read_text()
    assert "dilation=(2, 2)" in text and "dilation=(24, 24)" in text
    compile(text, "net.py", "exec")


def test_caffemodel_loads_like_a_checkpoint(tiny):
    """checkpoint.load_weights accepts a .caffemodel (deploy prototxt generated in memory)."""
    proto, model, _ = tiny
    # The generated prototxt has eps 1e-5; with ours (eps 1e-3) the variances differ by the fold.
    params, classes = caffe.caffemodel_weights(model, "tiny")
    params2, classes2 = caffe.caffemodel_weights(model, "tiny", prototxt=proto)
    assert classes == classes2 == 3
    var = np.concatenate([v for k, v in params.items() if k.endswith("/variance")])
    var2 = np.concatenate([v for k, v in params2.items() if k.endswith("/variance")])
    tiny = var < 1e-4  # the calibrated blobs' tiny variances, where float32 shows the fold
    assert tiny.any()
    np.testing.assert_allclose(var2[tiny] - var[tiny], 1e-3 - 1e-5, rtol=1e-4)
    m = checkpoint.load_weights(model, variant="tiny")
    assert m.num_classes == 3
    with pytest.raises(DeepLabError, match="conv1.*shape"):
        caffe.caffemodel_weights(model, "resnet50")


def test_non_deeplab_net_has_no_meta(tmp_path):
    text = ('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            'convolution_param { num_output: 2 kernel_size: 3 } }\n')
    proto = tmp_path / "p.prototxt"
    proto.write_text(text)
    write_random_caffemodel(proto, tmp_path / "m.caffemodel")
    converted = convert(proto, tmp_path / "m.caffemodel", ckpt_path=tmp_path / "ck")
    assert (converted.variant, converted.num_classes) == (None, None)
    assert checkpoint.read_meta(tmp_path / "ck") == (None, None)
    assert sorted(checkpoint.read_params(tmp_path / "ck")) == ["c/biases", "c/weights"]


def test_resnet50_fixture_names_match_deeplab_backbone(resnet50_deploy_prototxt):
    from deeplab_resnet.model.arch import architecture
    converted = load_net(resnet50_deploy_prototxt)
    assert converted.deeplab is None
    shapes = converted.param_shapes()
    backbone = {k: v for k, v in architecture("resnet50", 21).param_shapes().items()
                if not k.startswith("fc1_voc12")}
    assert all(shapes[k] == v for k, v in backbone.items())
    assert shapes["fc1000/weights"] == (2048, 1000) and shapes["conv1/biases"] == (64,)


def test_deeplab_fixture_recognised(deeplab_deploy_prototxt):
    assert load_net(deeplab_deploy_prototxt).deeplab == ("resnet101", 21)


# -- bad inputs: one line, exit 2, no traceback, no output ------------------------------------

GOOD = ('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        'convolution_param { num_output: 2 kernel_size: 3 } }\n')


def _expect_error(tmp_path, args, *needles, capfd=None):
    """convert.py on `args` (in-process with `capfd`, else the script in a child process)
    writing every output: exit 2, one line `error: ...` holding `needles`, nothing written."""
    out = tmp_path / "out"
    weights = ["--ckpt-path", out / "ck", "--data-output-path", out / "w.npz"]
    argv = [*args, *(weights if "--caffemodel" in args else []),
            "--code-output-path", out / "net.py"]
    code, _, err = (run_command(convert_command.main, argv, capfd) if capfd is not None
                    else run_script(*argv))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists() or not os.listdir(out)


def test_error_unsupported_layer(tmp_path):
    """Through the script in a child process: its exit status and its whole stderr."""
    proto = tmp_path / "p.prototxt"
    proto.write_text(GOOD + 'layer { name: "norm1" type: "LRN" bottom: "c" top: "n" '
                            'lrn_param { local_size: 5 } }\n')
    _expect_error(tmp_path, [proto, "--caffemodel", tmp_path / "none.caffemodel"], "norm1", "LRN")


def test_error_prototxt_syntax(tmp_path, capfd):
    proto = tmp_path / "p.prototxt"
    proto.write_text(GOOD + "layer { name: \"x\" type: \n")
    _expect_error(tmp_path, [proto], "p.prototxt", "syntax", capfd=capfd)


def test_error_unknown_field_in_supported_layer(tmp_path, capfd):
    proto = tmp_path / "p.prototxt"
    proto.write_text(GOOD.replace("kernel_size: 3", "kernal_size: 3"))
    _expect_error(tmp_path, [proto], "p.prototxt", "kernal_size", capfd=capfd)


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "other net", "shape"])
def test_error_bad_caffemodel(tmp_path, kind, capfd):
    proto = tmp_path / "p.prototxt"
    proto.write_text(GOOD)
    converted = load_net(proto)
    data = caffemodel_bytes(converted, random_blobs(converted))
    model = tmp_path / "m.caffemodel"
    needles = ["m.caffemodel"]
    if kind == "truncated":
        data = data[: len(data) // 2]
    elif kind == "random":
        data = np.random.default_rng(0).bytes(5000)
    elif kind == "empty":
        data = b""
    elif kind == "other net":
        other = load_net(text=GOOD.replace('name: "c"', 'name: "conv9"'))
        data = caffemodel_bytes(other, random_blobs(other))
        needles.append("different")
    else:
        other = load_net(text=GOOD.replace("num_output: 2", "num_output: 5"))
        data = caffemodel_bytes(other, random_blobs(other))
        needles += ["'c'", "shape"]
    model.write_bytes(data)
    _expect_error(tmp_path, [proto, "--caffemodel", model], *needles, capfd=capfd)


def test_error_missing_prototxt_and_bad_shapes(tmp_path, capfd):
    _expect_error(tmp_path, [tmp_path / "nope.prototxt"], "nope.prototxt", capfd=capfd)
    with pytest.raises(KaffeError, match="'p'.*too small"):
        kaffe_convert.load_net(text=GOOD + 'layer { name: "p" type: "Pooling" bottom: "c" top: "p" '
                             'pooling_param { kernel_size: 9 } }')
    with pytest.raises(KaffeError, match="'e'.*shape"):
        kaffe_convert.load_net(text=GOOD + 'layer { name: "e" type: "Eltwise" bottom: "c" '
                                          'bottom: "data" top: "e" }')
    with pytest.raises(KaffeError, match="'z'.*'nothing'"):
        kaffe_convert.load_net(text=GOOD + 'layer { name: "z" type: "ReLU" bottom: "nothing" '
                                          'top: "z" }')


def test_caffemodel_weights_with_own_prototxt_fold_eps(tmp_path):
    """A non-DeepLab prototxt: no class count, variances folded for the DeepLab model's eps."""
    proto = tmp_path / "p.prototxt"
    proto.write_text(GOOD + 'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" '
                            'batch_norm_param { eps: 0.01 } }\n')
    blobs = write_random_caffemodel(proto, tmp_path / "m.caffemodel", bn_factor=2.0)
    params, classes = caffe.caffemodel_weights(tmp_path / "m.caffemodel", "resnet50",
                                               prototxt=proto)
    assert classes is None
    np.testing.assert_allclose(params["bn/variance"], blobs["bn"][1] / 2.0 + 0.01 - 1e-5, rtol=1e-6)
    # convert.py keeps the true variance for a non-DeepLab net (its code uses the true eps).
    convert(proto, tmp_path / "m.caffemodel", npz_path=tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz", allow_pickle=False) as data:
        np.testing.assert_allclose(data["bn/variance"], blobs["bn"][1] / 2.0, rtol=1e-6)


def test_settings_errors_name_convert_flags(tmp_path, capsys):
    """The library names its arguments (npz_path, code_path); convert.py shows its own flags."""
    from deeplab_resnet import cli
    from deeplab_resnet.cli import convert as convert_command
    proto = tmp_path / "p.prototxt"
    proto.write_text(GOOD)
    for argv, message in (
            ([proto], "error: nothing to do: give --ckpt-path, --data-output-path or "
                      "--code-output-path"),
            ([proto, "--data-output-path", tmp_path / "w.npz"],
             "error: --ckpt-path and --data-output-path need --caffemodel")):
        with pytest.raises(SystemExit) as info:
            cli.run(convert_command.main, [str(a) for a in argv])
        assert (info.value.code, capsys.readouterr().err) == (2, message + "\n")
    assert os.listdir(tmp_path) == ["p.prototxt"]
