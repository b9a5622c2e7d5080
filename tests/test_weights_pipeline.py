"""One weights pipeline (issue 25 item 2): a weights path is resolved once and its file opened
once (TensorFlow checkpoints by the library's one reader), its architecture described once,
whether it is loaded, resumed from, started from or converted."""

import ast
import collections

import numpy as np
import pytest
import tensorflow as tf

import deeplab_resnet
from conftest import ROOT, tiny_model
from deeplab_resnet import training
from deeplab_resnet.data import shapes
from deeplab_resnet.model import arch
from deeplab_resnet.weights import caffe, checkpoint, npz_file, paths

CLASSES = len(shapes.CLASSES)


@pytest.fixture
def opens(monkeypatch):
    """A Counter of what a call opens: TensorFlow checkpoints (its reader, wherever called),
    weights paths resolved, `.npz` and caffemodel files read, architectures described."""
    found = collections.Counter()

    def count(owner, name, label):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            found[label(*args) if callable(label) else label] += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)
    count(tf.train, "load_checkpoint", "checkpoint opened")
    count(paths, "locate", "path resolved")
    count(npz_file, "read", "npz read")
    count(caffe.reader, "read_caffemodel", "caffemodel read")
    # Weights that do not record their variant are matched to every variant's (21-class)
    # description: each described once too.
    count(arch, "_describe", lambda variant, classes: f"{variant}/{classes} described")
    arch._described.cache_clear()
    return found


def described(opens):
    """The architectures described, each once, taken out of `opens`."""
    names = [key for key in opens if key.endswith(" described")]
    assert all(opens[name] == 1 for name in names), opens
    assert f"tiny/{CLASSES} described" in names, opens
    for name in names:
        del opens[name]
    return True


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny net's weights as a folder of checkpoints, an .npz, a caffemodel and its prototxt,
    and a small dataset."""
    root = tmp_path_factory.mktemp("pipeline")
    params = {k: v.numpy() for k, v in tiny_model(CLASSES, seed=3).params.items()}
    checkpoint.save_params(params, root / "run" / "model.ckpt-5", "tiny", CLASSES)
    np.savez(root / "w.npz", **params)
    (root / "tiny.prototxt").write_text(caffe.deploy_prototxt("tiny", CLASSES))
    caffe.write_caffemodel(root / "tiny.prototxt", params, root / "tiny.caffemodel")
    data = shapes.make_shapes_dataset(root / "data", num_train=2, num_val=1, size=(40, 48),
                                      seed=4)
    return root, data


def test_the_library_has_one_reader_of_tensorflow_checkpoints():
    calls = []
    for path in sorted((ROOT / "deeplab_resnet").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "attr", getattr(node, "id", None))
            if name in ("load_checkpoint", "CheckpointReader", "NewCheckpointReader"):
                calls.append((path.relative_to(ROOT).as_posix(), name))
    assert calls == [("deeplab_resnet/weights/tf_reader.py", "load_checkpoint")]


@pytest.mark.parametrize("given, opened", [
    ("run", {"checkpoint opened": 1}),
    ("w.npz", {"npz read": 1}),
    ("tiny.caffemodel", {"caffemodel read": 1}),
])
def test_a_load_opens_the_file_once(files, opens, given, opened):
    root, _ = files
    segmenter = deeplab_resnet.Segmenter.load(root / given)
    assert (segmenter.model, segmenter.num_classes) == ("tiny", CLASSES)
    assert described(opens) and opens == {"path resolved": 1, **opened}


def _config(data, snapshot_dir, **settings):
    return training.TrainConfig(**{
        "data_dir": data["root"], "data_list": data["train"], "variant": "tiny",
        "num_classes": CLASSES, "batch_size": 1, "input_size": (32, 32), "num_steps": 1,
        "save_num_images": 0, "snapshot_dir": str(snapshot_dir), **settings})


def test_a_run_opens_its_starting_weights_once_and_a_resume_its_checkpoint_once(
        files, opens, tmp_path):
    root, data = files
    config = _config(data, tmp_path / "snap", restore_from=str(root / "w.npz"))
    assert training.train(config).updates == 1
    assert described(opens) and opens == {"path resolved": 1, "npz read": 1}
    opens.clear()
    arch._described.cache_clear()
    # The rerun resumes (the run record, the model, the restore): one open of the checkpoint.
    result = training.train(_config(data, tmp_path / "snap", num_steps=2,
                                    restore_from=str(root / "w.npz")))
    assert result.updates == 2
    assert described(opens) and opens == {"path resolved": 1, "checkpoint opened": 1}


def test_a_conversion_opens_its_source_once(files, opens, tmp_path):
    root, _ = files
    done = deeplab_resnet.convert(root / "tiny.prototxt", root / "tiny.caffemodel",
                                  ckpt_path=tmp_path / "converted")
    assert (done.variant, done.num_classes) == ("tiny", CLASSES)
    assert described(opens) and opens == {"caffemodel read": 1}
    opens.clear()
    arch._described.cache_clear()
    assert checkpoint.rewrite(root / "run", npz_path=tmp_path / "again.npz")[:2] == (
        "tiny", CLASSES)
    assert described(opens) and opens == {"path resolved": 1, "checkpoint opened": 1}
