"""Every ```python block of the README runs, in-process, on the tiny network and generated data.

The blocks use the README's file names (`ckpt/voc12`, `train_iter_20000.caffemodel`,
`photo.jpg`, `VOCdevkit/VOC2012` + `dataset/val.txt`, ...); each block runs in a fresh folder
where those names lead to small stand-ins: a 4-class `tiny` network as a checkpoint, a
caffemodel and its deploy prototxt, a SavedModel and emitted code, and the synthetic shapes
dataset.
"""

import logging
import os
import shutil
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_model

NUM_CLASSES = 4


def python_blocks():
    """[(line number, code)] of the README's ```python blocks (indented ones too)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    blocks, start, indent = [], None, ""
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if start is None and stripped == "```python":
            start, indent = number, line[: len(line) - len(line.lstrip())]
        elif start is not None and stripped == "```" and line.startswith(indent):
            blocks.append((start, textwrap.dedent("\n".join(lines[start:number - 1]))))
            start = None
    return blocks


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The files the README's blocks name, for the tiny network."""
    from deeplab_resnet.data.images import read_image
    import deeplab_resnet
    from deeplab_resnet.data import shapes
    from deeplab_resnet.weights.caffe import deploy_prototxt, write_caffemodel
    root = tmp_path_factory.mktemp("readme")
    net = tiny_model(NUM_CLASSES, seed=8, head_biases=np.linspace(-0.3, 0.3, NUM_CLASSES))
    (root / "misc").mkdir()
    prototxt = str(root / "misc" / "deploy.prototxt")
    with open(prototxt, "w") as f:
        f.write(deploy_prototxt("tiny", NUM_CLASSES))
    caffemodel = str(root / "train_iter_20000.caffemodel")
    write_caffemodel(prototxt, {k: v.numpy() for k, v in net.params.items()}, caffemodel)
    deeplab_resnet.convert(prototxt, caffemodel, ckpt_path=root / "ckpt" / "voc12",
                           npz_path=root / "weights.npz", code_path=root / "net.py")
    data = shapes.make_shapes_dataset(root / "VOCdevkit" / "VOC2012", num_train=2, num_val=2,
                                      size=(40, 56), seed=1)
    (root / "dataset").mkdir()
    shutil.copy(data["val"], root / "dataset" / "val.txt")
    rng = np.random.default_rng(0)
    (root / "my_photos").mkdir()
    for path in ("photo.jpg", "my_photos/a.jpg", "my_photos/b.jpg"):
        Image.fromarray(rng.integers(0, 256, (37, 49, 3), dtype=np.uint8)).save(root / path)
    deeplab_resnet.Segmenter.load(caffemodel).export(root / "exported")
    assert read_image(root / "photo.jpg").shape == (37, 49, 3)
    return root


@pytest.fixture
def logging_state():
    """Puts back what a block may change in `logging` (root handlers, the library's level)."""
    root, library = logging.getLogger(), logging.getLogger("deeplab_resnet")
    saved = list(root.handlers), root.level, library.level
    yield
    for handler in [h for h in root.handlers if h not in saved[0]]:
        root.removeHandler(handler)
    root.setLevel(saved[1])
    library.setLevel(saved[2])


def test_the_readme_has_a_python_api_section_with_its_blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n## Python API\n" in text
    blocks = [code for _, code in python_blocks()]
    for name in ("Segmenter.load", "predict_many", ".evaluate(", ".export(", "convert(",
                 "train(", "BadFileError", "logging", 'precision="fp32"'):
        assert any(name in code for code in blocks), name


@pytest.mark.parametrize("line,code", [pytest.param(line, code, id=f"README.md:{line}")
                                        for line, code in python_blocks()])
def test_block_runs(line, code, workspace, tmp_path, monkeypatch, logging_state):
    for entry in os.listdir(workspace):
        # A block that exports writes its own SavedModel; the others read the one made here.
        if not (entry == "exported" and ".export(" in code):
            os.symlink(workspace / entry, tmp_path / entry)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # `import net`: the emitted code
    monkeypatch.delitem(sys.modules, "net", raising=False)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": f"readme_line{line}"})
    sys.modules.pop("net", None)


def test_ci_runs_the_readme_test_command():
    """CI runs exactly the test command the README gives (two processes: pytest-xdist)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = {line.strip() for line in readme + ci if line.startswith("python -m pytest ")}
    assert commands == {"python -m pytest -q -n 2 tests"}
