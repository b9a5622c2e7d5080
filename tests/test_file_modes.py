"""Every kind of output file and folder gets the mode a plain open()/mkdir() gives under the
umask (atomic writes go through temporary files, which are created 0600/0700)."""

import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, save_model, tiny_model
from PIL import Image
from test_dataset_tools import tree  # noqa: F401  (the fixture: a small VOC + SBD tree)

from deeplab_resnet.files import atomic_path
from deeplab_resnet import cli
from deeplab_resnet.weights import caffe
from deeplab_resnet.weights.caffe import write_caffemodel
from deeplab_resnet.cli import convert, evaluate, export, inference

NUM_CLASSES = 3


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(folder):
    """{path relative to `folder`: permission bits} of everything under it."""
    out = {}
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(parent, name)
            out[os.path.relpath(path, folder)] = stat.S_IMODE(os.stat(path).st_mode)
    return out


def _main(main, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(main, [str(a) for a in argv])
    assert exit_info.value.code == 0


def test_outputs_have_plain_open_modes(umask, tree, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (33, 35, 3), dtype=np.uint8)).save(data / "a.png")
    Image.fromarray(rng.integers(0, NUM_CLASSES, (33, 35), dtype=np.uint8), mode="L").save(
        data / "a_label.png")
    (data / "list.txt").write_text("/a.png /a_label.png\n")

    model = tiny_model(NUM_CLASSES)
    ckpt = save_model(model, out / "ckpt" / "model")
    _main(convert.main, [ckpt, "--data-output-path", out / "weights.npz"])
    prototxt = out / "deploy.prototxt"
    with atomic_path(prototxt) as tmp, open(tmp, "w") as f:
        f.write(caffe.deploy_prototxt("tiny", NUM_CLASSES))
    write_caffemodel(str(prototxt), {k: v.numpy() for k, v in model.params.items()},
                     str(out / "model.caffemodel"))
    _main(inference.main, [data / "a.png", ckpt, "--save-dir", out / "inference", "--save-logits"])
    _main(evaluate.main, ["--data-dir", data, "--data-list", data / "list.txt", "--restore-from",
                          ckpt, "--save-dir", out / "eval", "--json-output", out / "scores.json"])
    _main(export.main, ["--restore-from", ckpt, "--output-dir", out / "served"])
    voc, sbd = tree
    for script, args in (("convert_sbd.py", ["--voc-root", voc, "--sbd-root", sbd]),
                         ("build_voc_lists.py", ["--voc-root", voc, "--sbd-root", sbd,
                                                 "--output-dir", out / "lists"])):
        # The tools import the installed package; make it this checkout's.
        result = subprocess.run([sys.executable, str(ROOT / "dataset" / script), *map(str, args)],
                                capture_output=True, text=True, timeout=120, check=False,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 0, result.stderr

    modes = _modes(out)
    modes.update({f"SegmentationClassAug/{k}": v
                  for k, v in _modes(voc / "SegmentationClassAug").items()})
    for kind in ("ckpt/model.index", "weights.npz", "model.caffemodel", "deploy.prototxt",
                 "inference/a_mask.png", "inference/a_overlay.png", "inference/a_logits.npy",
                 "eval/a.png", "scores.json", "served", "served/saved_model.pb",
                 "lists/train.txt", "SegmentationClassAug/2008_000003.png"):
        assert kind in modes, kind  # each kind of output was written
    # SegmentationClassAug/ holds only files; the rest lies under `out`.
    expected = {path: (0o777 if (out / path).is_dir() else 0o666) & ~umask for path in modes}
    assert {p: oct(m) for p, m in modes.items()} == {p: oct(m) for p, m in expected.items()}
