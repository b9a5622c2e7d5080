"""The 2017 TF port's checkpoints (V1 single file, V2 snapshots with Momentum slots), .npz
weights and refused pickled .npy, through every script that takes weights."""

import json
import os

import numpy as np
import pytest
from conftest import run_command, tiny_model, with_trained_statistics
from PIL import Image

import tensorflow as tf

from deeplab_resnet import cli, training
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.weights import legacy
from deeplab_resnet.model.arch import architecture, infer_meta, infer_variant
from deeplab_resnet.errors import SettingError
from deeplab_resnet.cli import convert, evaluate, export, inference, train_flags

NUM_CLASSES = 3
_PORT_LEAVES = {"mean": "moving_mean", "variance": "moving_variance", "scale": "gamma",
                "offset": "beta"}


def port_key(name):
    """The port's name for one of ours (the inverse of what the loader maps)."""
    layer, leaf = name.split("/")
    return f"{layer}/{_PORT_LEAVES.get(leaf, leaf)}"


def write_port_checkpoint(params, path, version, step=None):
    """Writes {our name: array} the way the port did, with tf.compat.v1.train.Saver.

    V2 snapshots also get the port's `<var>/Momentum` slots and a step counter.
    """
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        for name, value in params.items():
            tf1.get_variable(port_key(name), initializer=value)
            if version == 2:
                tf1.get_variable(port_key(name) + "/Momentum", initializer=np.full_like(value, 7.0))
        if version == 2:
            tf1.get_variable("global_step", initializer=np.int64(step or 0))
        write_version = tf1.train.SaverDef.V1 if version == 1 else tf1.train.SaverDef.V2
        saver = tf1.train.Saver(write_version=write_version)
        with tf1.Session() as sess:
            sess.run(tf1.global_variables_initializer())
            return saver.save(sess, str(path), global_step=step, write_meta_graph=False)


@pytest.fixture(scope="module")
def params():
    """A tiny model's weights with non-trivial BatchNorm statistics."""
    model = tiny_model(NUM_CLASSES, seed=3, head_biases=[-0.2, 0.1, 0.3])
    return with_trained_statistics(model, seed=1)


@pytest.fixture(scope="module")
def files(params, tmp_path_factory):
    """Our checkpoint (reference), the port's V1 file and V2 snapshot folder, an .npz."""
    root = tmp_path_factory.mktemp("weights")
    ours = checkpoint.save_params(params, root / "ours" / "model", "tiny", NUM_CLASSES)
    v1 = write_port_checkpoint(params, root / "deeplab_resnet.ckpt", version=1)
    write_port_checkpoint(params, root / "snapshots" / "model.ckpt", version=2, step=20000)
    npz = root / "weights.npz"
    np.savez(npz, **params)
    return {"ours": ours, "v1": v1, "v2": str(root / "snapshots"), "npz": str(npz)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (41, 53, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, NUM_CLASSES, (41, 53), dtype=np.uint8), mode="L").save(
        root / "a_label.png")
    (root / "list.txt").write_text("/a.png /a_label.png\n")
    return root


def test_v1_file_is_what_the_port_wrote(files):
    assert os.path.isfile(files["v1"]) and not os.path.exists(files["v1"] + ".index")
    assert sorted(os.listdir(files["v2"])) == ["checkpoint", "model.ckpt-20000.data-00000-of-00001",
                                               "model.ckpt-20000.index"]


@pytest.mark.parametrize("source", ["v1", "v2", "npz"])
def test_inference_gives_the_same_logits_as_our_checkpoint(source, files, data, tmp_path, capfd):
    logits = {}
    for kind in ("ours", source):
        out = tmp_path / kind
        code, _, err = run_command(inference.main, [data / "a.png", files[kind], "--save-dir", out,
                                                    "--save-logits"], capfd)
        assert code == 0, err
        logits[kind] = np.load(out / "a_logits.npy", allow_pickle=False)
    assert logits[source].shape[-1] == NUM_CLASSES
    np.testing.assert_array_equal(logits[source], logits["ours"])


def test_evaluate_reads_a_snapshot_folder_and_names_the_checkpoint_used(files, data, tmp_path,
                                                                          capfd):
    reports = {}
    for kind in ("ours", "v2"):
        out = tmp_path / f"{kind}.json"
        argv = ["--data-dir", data, "--data-list", data / "list.txt", "--restore-from",
                files[kind], "--json-output", out, "--save-dir", tmp_path / kind]
        code, stdout, err = run_command(evaluate.main, argv, capfd)
        assert code == 0, err
        assert f"written to {out}" in stdout and f"written to {tmp_path / kind}" in stdout
        assert stdout.strip().splitlines()[-1].startswith("Mean IoU: ")
        reports[kind] = json.loads(out.read_text())
    settings = reports["v2"]["settings"]
    assert settings["restore_from"] == os.path.join(files["v2"], "model.ckpt-20000")
    assert (settings["model"], settings["num_classes"]) == ("tiny", NUM_CLASSES)
    assert reports["v2"]["confusion_matrix"] == reports["ours"]["confusion_matrix"]


def test_export_takes_a_v1_file(files, tmp_path, capfd):
    code, _, err = run_command(export.main, ["--restore-from", files["v1"], "--output-dir",
                                              tmp_path / "served"], capfd)
    assert code == 0, err
    assert os.path.isfile(tmp_path / "served" / "saved_model.pb")
    served = tf.saved_model.load(str(tmp_path / "served"))
    image = np.random.default_rng(2).integers(0, 256, (37, 29, 3), dtype=np.uint8)
    from deeplab_resnet.predict import prediction as predict
    expected = predict.Predictor(checkpoint.load_weights(files["ours"]))(image).labels
    labels = served.signatures["serving_default"](image=tf.constant(image))["labels"].numpy()
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("source", ["v1", "v2"])
def test_training_restores_the_port_weights(source, params, files):
    args = train_flags.build_parser(training.TRAIN).parse_args(["--restore-from", files[source]])
    model = training.build_model(train_flags.config_from_args(args), None)
    assert (model.variant, model.num_classes) == ("tiny", NUM_CLASSES)  # from names and head
    assert set(model.params) == set(params)
    for name, var in model.params.items():
        np.testing.assert_array_equal(var.numpy(), params[name], err_msg=name)


def test_train_script_starts_from_a_v1_file(params, files, data, tmp_path, capfd):
    """train.py --restore-from the port's V1 file: one update with a negligible learning rate
    leaves its weights in the first snapshot."""
    from deeplab_resnet.cli import train
    argv = ["--restore-from", files["v1"], "--data-dir", data, "--data-list", data / "list.txt",
            "--input-size", "33,33", "--batch-size", 1, "--num-steps", 1, "--learning-rate", 1e-12,
            "--momentum", 0, "--weight-decay", 0, "--save-num-images", 0,
            "--snapshot-dir", tmp_path / "snapshots"]
    code, _, err = run_command(train.main, argv, capfd)
    assert code == 0, err
    saved = checkpoint.read_params(tmp_path / "snapshots")
    assert checkpoint.read_meta(tmp_path / "snapshots") == ("tiny", NUM_CLASSES)
    assert set(saved) == set(params)
    for name, value in params.items():
        np.testing.assert_allclose(saved[name], value, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("source", ["v1", "v2"])
def test_convert_rewrites_a_port_checkpoint_in_our_format(source, params, files, tmp_path, capfd):
    new = tmp_path / "ckpt" / "deeplab_resnet"
    code, out, err = run_command(convert.main, [files[source], "--ckpt-path", new], capfd)
    assert code == 0, err
    assert str(new) in out and "tiny, 3 classes" in out
    assert checkpoint.read_meta(new) == ("tiny", NUM_CLASSES)
    saved = checkpoint.read_params(new)
    assert set(saved) == set(params)
    for name, value in params.items():
        np.testing.assert_array_equal(saved[name], value, err_msg=name)


def test_resnet101_port_names_map_onto_every_model_variable():
    """Without building tensors: the port's names for ResNet-101 cover our variables exactly."""
    arch = architecture("resnet101", 21)
    ours = set()
    for conv in arch.convs:
        ours.add(f"{conv.name}/weights")
        if conv.bias:
            ours.add(f"{conv.name}/biases")
        if conv.bn:
            ours.update(f"{conv.bn}/{leaf}" for leaf in _PORT_LEAVES)
    port_keys = [port_key(n) for n in ours]
    port_keys += [k + "/Momentum" for k in port_keys] + ["global_step"]
    assert legacy.is_port_checkpoint(port_keys)
    mapped = legacy.name_map(port_keys)
    assert set(mapped) == ours and len(ours) == 4 * 104 + 104 + 8  # 104 BN'd convs, 4-conv head
    shapes = {n: (3, 3, 2048, 21) if n.startswith("fc1_voc12") else (1,) for n in mapped}
    assert infer_meta(shapes) == ("resnet101", 21)
    assert infer_variant(["conv1", "res2a_branch1"]) is None


def test_resnet50_checkpoint_without_model_flag_is_recognised(tmp_path):
    """Weights that do not record their variant (e.g. a converted ImageNet ResNet) get it from
    their names; a contradicting --model is a one-line error naming both."""
    arch = architecture("resnet50", 21)
    params = {f"{c.name}/weights": np.zeros((1, 1, 1, 1), np.float32) for c in arch.convs
              if not c.name.startswith("fc1_voc12")}
    params["fc1000/weights"] = np.zeros((1, 1), np.float32)
    prefix = checkpoint.save_params(params, tmp_path / "r50")
    assert checkpoint.read_meta(prefix) == (None, None)
    assert checkpoint.check_meta(prefix, None, None) == ("resnet50", None)  # no head: no count
    assert checkpoint.check_meta(prefix, None, 5, new_head=True) == ("resnet50", 5)
    with pytest.raises(SettingError, match="holds model 'resnet50', but variant resnet101") as info:
        checkpoint.check_meta(prefix, "resnet101", None)
    assert "but --model resnet101" in info.value.naming(cli.flag_name)


def test_pickled_npy_is_refused_without_unpickling(tmp_path, data, capfd):
    path = tmp_path / "deeplab_resnet.npy"
    marker = tmp_path / "ran"
    # An object-array .npy whose pickle (protocol 0, by hand) creates `marker` if ever loaded.
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False,
                                                 "shape": ()})
        f.write(b"cbuiltins\nopen\n(V" + str(marker).encode() + b"\nVw\ntR.")
    code, _, err = run_command(
        inference.main, [data / "a.png", path, "--save-dir", tmp_path / "o"], capfd)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "pickled" in err and "unpickling runs code" in err and "convert.py" in err
    assert not marker.exists()
    code, _, err = run_command(convert.main, [path, "--ckpt-path", tmp_path / "c"], capfd)
    assert code == 2 and "unpickling runs code" in err and not marker.exists()


def test_unreadable_npz_and_convert_misuse_are_one_line_errors(files, tmp_path, capfd):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    code, _, err = run_command(convert.main, [bad, "--ckpt-path", tmp_path / "c"], capfd)
    assert code == 2 and "bad.npz: a text file, not an .npz of weights" in err  # issue 26
    code, _, err = run_command(
        convert.main, [files["v1"], "--code-output-path", tmp_path / "n.py"], capfd)
    assert code == 2 and "is a checkpoint, not a prototxt" in err
    code, _, err = run_command(
        convert.main, [tmp_path / "m.caffemodel", "--ckpt-path", tmp_path / "c"], capfd)
    assert code == 2 and "give the deploy prototxt first" in err
    assert sorted(os.listdir(tmp_path)) == ["bad.npz"]


def test_convert_says_what_it_wrote(tmp_path, capfd):
    from deeplab_resnet.weights.caffe import deploy_prototxt, write_caffemodel
    model = tiny_model(NUM_CLASSES)
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt("tiny", NUM_CLASSES))
    caffemodel = write_caffemodel(str(prototxt), {k: v.numpy() for k, v in model.params.items()},
                                  str(tmp_path / "m.caffemodel"))
    argv = [prototxt, "--caffemodel", caffemodel, "--ckpt-path", tmp_path / "ck",
            "--data-output-path", tmp_path / "w.npz", "--code-output-path", tmp_path / "net.py"]
    code, out, err = run_command(convert.main, argv, capfd)
    assert code == 0, err
    count = len(model.params)
    assert out.splitlines() == [
        f"checkpoint {tmp_path / 'ck'} ({count} tensors; DeepLab tiny, 3 classes)",
        f"weights {tmp_path / 'w.npz'} ({count} tensors, .npz)",
        f"TF2 code {tmp_path / 'net.py'}"]


def test_convert_records_class_names_that_evaluation_shows(files, data, tmp_path, capfd):
    from deeplab_resnet.weights.caffe import deploy_prototxt, write_caffemodel
    model = tiny_model(NUM_CLASSES)
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(deploy_prototxt("tiny", NUM_CLASSES))
    caffemodel = write_caffemodel(str(prototxt), {k: v.numpy() for k, v in model.params.items()},
                                  str(tmp_path / "m.caffemodel"))
    code, _, err = run_command(convert.main, [prototxt, "--caffemodel", caffemodel, "--ckpt-path",
                                              tmp_path / "two", "--class-names", "sky,sea"], capfd)
    assert code == 2 and err.strip() == ("error: --class-names: 2 names for 3 classes: give "
                                         "one name per class, in class order")
    assert not (tmp_path / "two.index").exists()
    code, _, err = run_command(convert.main, [prototxt, "--caffemodel", caffemodel, "--ckpt-path",
                                              tmp_path / "ck", "--class-names", "sky, sea,sand"],
                               capfd)
    assert code == 0, err
    assert checkpoint.describe(tmp_path / "ck").class_names == ("sky", "sea", "sand")
    # Rewriting a port checkpoint records them too.
    code, _, err = run_command(convert.main, [files["v1"], "--ckpt-path", tmp_path / "port",
                                              "--class-names", "a,b,c"], capfd)
    assert code == 0, err
    assert checkpoint.describe(tmp_path / "port").class_names == ("a", "b", "c")
    report = tmp_path / "scores.json"
    code, out, err = run_command(evaluate.main, ["--data-dir", data,
                                                 "--data-list", data / "list.txt",
                                                 "--restore-from", tmp_path / "ck", "--json-output",
                                                 report], capfd)
    assert code == 0, err
    assert "sand" in out and "sand" in report.read_text() and "class_2" not in out


def test_imagenet_caffemodel_without_prototxt_suggests_it(tmp_path, resnet50_deploy_prototxt):
    """An ImageNet ResNet's caffemodel (conv1 has a bias, no DeepLab head) given directly."""
    from caffe_fixtures import write_random_caffemodel
    caffemodel = tmp_path / "ResNet-50-model.caffemodel"
    write_random_caffemodel(resnet50_deploy_prototxt, caffemodel, seed=1)
    with pytest.raises(SettingError, match="no 'fc1_voc12_c0' layer.*prototxt") as info:
        checkpoint.load_weights(caffemodel)
    assert "with --prototxt" in info.value.naming(cli.flag_name)
    with pytest.raises(SettingError) as info:
        checkpoint.load_weights(caffemodel, new_head=True)
    assert "'conv1' has 2 blobs" in str(info.value)
    assert "give its own deploy prototxt with --prototxt" in info.value.naming(cli.flag_name)
    # With its prototxt and no --model, the variant comes from the layer names.
    model = checkpoint.load_weights(caffemodel, None, 5, new_head=True,
                                    prototxt=resnet50_deploy_prototxt)
    assert (model.variant, model.num_classes) == ("resnet50", 5)


def test_snapshot_folder_moved_from_another_machine_resolves_to_the_last_step(tmp_path):
    """The port's `checkpoint` file names absolute paths of the machine that trained: when
    they do not exist here, the latest step wins by number, not by spelling."""
    folder = tmp_path / "snapshots"
    for step in (9000, 10000, 900):
        write_port_checkpoint({"conv1/weights": np.zeros((1, 1, 1, 1), np.float32)},
                              folder / "model.ckpt", version=2, step=step)
    (folder / "checkpoint").write_text('model_checkpoint_path: "/home/someone/snapshots/'
                                       'model.ckpt-10000"\n')
    assert checkpoint.resolve(folder) == str(folder / "model.ckpt-10000")
