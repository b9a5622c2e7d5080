"""One way to load weights (checkpoint.open_weights / describe) and what is checked on the way
in: metadata against tensors, every tensor's shape, unknown and duplicated members, NaN/inf
values, class names recorded in checkpoints; caffemodels matched to the architecture directly."""

import zipfile

import numpy as np
import pytest
import tensorflow as tf
from conftest import run_command, tiny_model, with_trained_statistics

from deeplab_resnet.weights import caffe
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.model import network
from deeplab_resnet.weights import paths, tf_reader
from deeplab_resnet.cli import convert, inference
from deeplab_resnet.errors import BadFileError, SettingError, WriteError
from kaffe import convert as kaffe_convert
from kaffe import transforms, writer

NUM_CLASSES = 3
NAMES = ("background", "cat", "dog")


@pytest.fixture(scope="module")
def params():
    """A tiny model's weights with non-trivial BatchNorm statistics."""
    return with_trained_statistics(tiny_model(NUM_CLASSES, seed=1), seed=5)


@pytest.fixture(scope="module")
def caffemodels(params, tmp_path_factory):
    """The tiny net as a caffemodel, and as one with legacy 4-D blob shapes (num/channels/...)."""
    root = tmp_path_factory.mktemp("caffe")
    net = caffe.load_net(text=caffe.deploy_prototxt("tiny", NUM_CLASSES))
    blobs = transforms.params_to_blobs(net.steps, params, bn_factor=999.98)
    paths = {"new": root / "tiny.caffemodel", "legacy": root / "tiny_legacy.caffemodel"}
    paths["new"].write_bytes(writer.caffemodel_bytes(net, blobs))
    paths["legacy"].write_bytes(writer.caffemodel_bytes(net, blobs, legacy_shapes=True))
    return paths


def _refused(main, argv, capfd, *fragments):
    code, _, err = run_command(main, argv, capfd)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _write_checkpoint(prefix, params, meta):
    """A checkpoint with arbitrary `meta` values, as a corrupt or hand-made file has them."""
    root = {"params": {k: tf.Variable(v) for k, v in params.items()},
            "meta": {k: tf.Variable(v) for k, v in meta.items()}}
    tf.train.Checkpoint(**root).write(str(prefix))
    return str(prefix)


def test_describe_says_what_a_file_is_without_building_a_model(params, caffemodels, tmp_path,
                                                                 monkeypatch):
    ckpt = checkpoint.save_params(params, tmp_path / "run" / "model.ckpt-7", "tiny", NUM_CLASSES,
                                  class_names=NAMES)
    npz = tmp_path / "w.npz"
    np.savez(npz, **params)
    monkeypatch.setattr(network, "DeepLabResNet", None)  # nothing may be built
    info = checkpoint.describe(tmp_path / "run")
    assert (info.path, info.format) == (ckpt, "checkpoint")
    assert (info.variant, info.num_classes, info.class_names, info.recorded) == (
        "tiny", NUM_CLASSES, NAMES, True)
    info = checkpoint.describe(npz)
    assert (info.format, info.variant, info.num_classes, info.class_names, info.recorded) == (
        "npz", "tiny", NUM_CLASSES, None, False)
    info = checkpoint.describe(caffemodels["new"])
    assert (info.format, info.variant, info.num_classes) == ("caffemodel", "tiny", NUM_CLASSES)


def test_class_names_are_recorded_and_loaded_weights_keep_them(params, tmp_path):
    prefix = checkpoint.save_params(params, tmp_path / "c", "tiny", NUM_CLASSES,
                                    class_names=NAMES)
    assert checkpoint.describe(prefix).class_names == NAMES
    assert checkpoint.describe(checkpoint.save_params(params, tmp_path / "plain", "tiny",
                                                      NUM_CLASSES)).class_names is None
    # convert.py SOURCE keeps them.
    checkpoint.rewrite(prefix, ckpt_path=tmp_path / "again")
    assert checkpoint.describe(tmp_path / "again").class_names == NAMES
    with pytest.raises(SettingError, match="2 names for 3 classes"):
        checkpoint.save_params(params, tmp_path / "bad", "tiny", NUM_CLASSES, class_names=NAMES[:2])


def test_training_checkpoints_can_record_class_names(params, tmp_path):
    """`class_names_meta` is what a training loop adds to its checkpoint's `meta` dict."""
    model = tiny_model(NUM_CLASSES)
    assert checkpoint.class_names_meta(None) == {}
    ckpt = tf.train.Checkpoint(params=model.params,
                               meta={**model.meta, **checkpoint.class_names_meta(NAMES)})
    prefix = ckpt.write(str(tmp_path / "model.ckpt-1"))
    assert checkpoint.describe(prefix).class_names == NAMES
    # Restoring into a checkpoint object without them still works (older loops).
    status = tf.train.Checkpoint(params=model.params, meta=model.meta).read(prefix)
    status.assert_existing_objects_matched()


def test_caffemodel_blobs_match_the_architecture_without_a_prototxt(params, caffemodels,
                                                                      tmp_path, monkeypatch):
    """The direct match gives what kaffe gives for the generated deploy prototxt, for the
    blob shapes given as shape or as legacy num/channels/height/width, and generates no
    prototxt."""
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(caffe.deploy_prototxt("tiny", NUM_CLASSES))
    reference, classes = caffe.caffemodel_weights(caffemodels["new"], None, prototxt=proto)
    assert classes == NUM_CLASSES
    for banned in (caffe, kaffe_convert):
        def refuse(*args, **kwargs):
            raise AssertionError("a prototxt was generated or parsed")
        monkeypatch.setattr(banned, "load_net", refuse)
    monkeypatch.setattr(caffe, "deploy_prototxt", refuse)
    for form in ("new", "legacy"):
        direct, classes = caffe.caffemodel_weights(caffemodels[form], None)
        assert classes == NUM_CLASSES and sorted(direct) == sorted(reference)
        for name, value in reference.items():
            np.testing.assert_array_equal(direct[name], value, err_msg=f"{form} {name}")
        np.testing.assert_allclose(direct["bn_conv1/variance"], params["bn_conv1/variance"],
                                   rtol=1e-5)
    model = checkpoint.load_weights(caffemodels["legacy"])
    np.testing.assert_array_equal(model.params["conv1/weights"].numpy(), params["conv1/weights"])


def test_a_path_is_resolved_and_opened_once(params, tmp_path, monkeypatch):
    checkpoint.save_params(params, tmp_path / "run" / "model.ckpt-3", "tiny", NUM_CLASSES)
    calls = {"_reader": 0, "latest_in": 0}
    for module, name in ((tf_reader, "_reader"), (paths, "latest_in")):
        original = getattr(module, name)

        def counted(*args, name=name, original=original):
            calls[name] += 1
            return original(*args)
        monkeypatch.setattr(module, name, counted)
    model = checkpoint.load_weights(tmp_path / "run")
    assert calls == {"_reader": 1, "latest_in": 1}
    assert (model.variant, model.num_classes) == ("tiny", NUM_CLASSES)


@pytest.mark.parametrize("meta, fragment", [
    ({"model": "garbage\x00", "num_classes": NUM_CLASSES}, "meta/model 'garbage\\x00' is not a "
                                                           "known model"),
    ({"model": 7, "num_classes": NUM_CLASSES}, "meta/model 7 is not a known model"),
    ({"model": "tiny", "num_classes": 100000}, "meta/num_classes 100000 is not a class count"),
    ({"model": "tiny", "num_classes": 0}, "meta/num_classes 0 is not a class count"),
    ({"model": "tiny", "num_classes": 5}, "records 5 classes, but its 'fc1_voc12_c0/weights' "
                                          "has shape (3, 3, 256, 3)"),
    ({"model": "resnet50", "num_classes": NUM_CLASSES}, "tensors of DeepLab resnet50 are "
                                                        "missing"),
    ({"model": "tiny", "num_classes": NUM_CLASSES, "class_names": ["a"]},
     "meta/class_names holds 1 names"),
])
def test_metadata_is_checked_against_the_tensors_before_a_model_is_built(
        meta, fragment, params, tmp_path, monkeypatch, data, capfd):
    prefix = _write_checkpoint(tmp_path / "ck", params, meta)
    monkeypatch.setattr(network, "DeepLabResNet", None)  # building one would fail otherwise
    with pytest.raises(BadFileError, match="^" + str(tmp_path / "ck")) as info:
        checkpoint.load_weights(prefix)
    assert fragment in str(info.value) and info.value.path == prefix
    _refused(inference.main, [data, prefix, "--save-dir", tmp_path / "out"], capfd, fragment)


@pytest.fixture
def data(tmp_path):
    from PIL import Image
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(image)
    return image


def test_npz_with_an_unknown_wrong_shaped_or_duplicated_member_is_refused(params, tmp_path,
                                                                         capfd):
    cases = {
        "extra.npz": (dict(params, **{"fc1000/weights": np.zeros((2, 2), np.float32)}),
                      "1 tensors are not parameters of DeepLab tiny (fc1000/weights)"),
        "shape.npz": (dict(params, **{"res3a_branch2b/weights": np.zeros((3, 3, 8, 16),
                                                                         np.float32)}),
                      "tensor 'res3a_branch2b/weights' has shape (3, 3, 8, 16), DeepLab tiny "
                      "expects (3, 3, 16, 16)"),
        "missing.npz": ({k: v for k, v in params.items() if k != "bn2a_branch1/mean"},
                        "1 tensors of DeepLab tiny are missing (bn2a_branch1/mean)"),
    }
    for name, (arrays, fragment) in cases.items():
        np.savez(tmp_path / name, **arrays)
        _refused(convert.main, [tmp_path / name, "--ckpt-path", tmp_path / "out" / "c"], capfd,
                 f"{name}: ", fragment)
        with pytest.raises(BadFileError, match="tiny"):
            checkpoint.load_weights(tmp_path / name)
    twice = tmp_path / "twice.npz"
    np.savez(twice, **params)
    with zipfile.ZipFile(twice, "a") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("conv1/weights.npy", archive.read("conv1/weights.npy"))
    _refused(convert.main, [twice, "--ckpt-path", tmp_path / "out" / "c"], capfd,
             "twice.npz: member 'conv1/weights.npy' appears twice")
    not_npy = tmp_path / "text.npz"
    with zipfile.ZipFile(not_npy, "w") as archive:
        archive.writestr("conv1/weights", b"not an array")
    _refused(convert.main, [not_npy, "--ckpt-path", tmp_path / "out" / "c"], capfd,
             "member 'conv1/weights' is not an .npy array")
    assert not (tmp_path / "out").exists()


def test_non_finite_weights_are_refused_naming_the_tensor(params, tmp_path, capfd, data):
    bad = dict(params)
    bad["res4a_branch2a/weights"] = params["res4a_branch2a/weights"].copy()
    bad["res4a_branch2a/weights"].flat[[0, 5, 9]] = [np.nan, np.inf, -np.inf]
    fragment = "tensor 'res4a_branch2a/weights' holds 3 NaN or infinite values"
    prefix = checkpoint.save_params(bad, tmp_path / "ck", "tiny", NUM_CLASSES)
    np.savez(tmp_path / "w.npz", **bad)
    caffemodel = caffe.write_caffemodel(None, bad, tmp_path / "m.caffemodel",
                                        text=caffe.deploy_prototxt("tiny", NUM_CLASSES))
    for path in (prefix, tmp_path / "w.npz", caffemodel):
        with pytest.raises(BadFileError, match=fragment) as info:
            checkpoint.load_weights(path)
        assert info.value.path == str(path)
        _refused(inference.main, [data, path, "--save-dir", tmp_path / "out"], capfd, fragment)
    _refused(convert.main, [tmp_path / "w.npz", "--ckpt-path", tmp_path / "c"], capfd, fragment)
    # A caffemodel converted with its prototxt is checked too.
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(caffe.deploy_prototxt("tiny", NUM_CLASSES))
    _refused(convert.main, [proto, "--caffemodel", caffemodel, "--ckpt-path", tmp_path / "c"],
             capfd, "m.caffemodel: ", fragment)


def test_wrong_caffemodel_head_header_is_refused(params, tmp_path):
    net = caffe.load_net(text=caffe.deploy_prototxt("tiny", NUM_CLASSES))
    blobs = transforms.params_to_blobs(net.steps, params)
    blobs["fc1_voc12_c0"][0] = blobs["fc1_voc12_c0"][0].reshape(-1)  # 1-D: not a kernel
    path = tmp_path / "m.caffemodel"
    path.write_bytes(writer.caffemodel_bytes(net, blobs))
    with pytest.raises(BadFileError, match="layer 'fc1_voc12_c0' blob 0 has shape"):
        checkpoint.describe(path)


def test_failed_write_is_a_write_error(tmp_path):
    (tmp_path / "partial.tmp").write_text("x")
    with pytest.raises(WriteError) as info:
        with checkpoint.writing(tmp_path / "out", partial=[str(tmp_path / "*.tmp")]):
            raise tf.errors.ResourceExhaustedError(
                None, None, f"Write {tmp_path / 'out'}; No space left on device [Op:SaveV2]")
    assert info.value.path == str(tmp_path / "out")
    assert info.value.strerror == "No space left on device"
    assert str(info.value) == f"{tmp_path / 'out'}: No space left on device"
    assert not (tmp_path / "partial.tmp").exists()
