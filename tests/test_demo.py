"""demo.py: the picture (column titles, class legend), the listing of every folder it wrote,
and reruns with other settings (they start over)."""

import contextlib
import io
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from deeplab_resnet.data.datasets import VOC_PALETTE
from deeplab_resnet.data.images import read_image
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.data import shapes
from deeplab_resnet.cli import demo, pictures
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.training import run_record


def test_picture_has_column_titles_and_a_colour_legend():
    rng = np.random.default_rng(0)
    sizes = [(30, 40), (20, 52)]  # rows of different sizes: columns are aligned to the widest
    rows = [[rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(3)]
            for h, w in sizes]
    names = ["background", "square", "disc", "triangle"]
    picture = pictures.picture(rows, demo.COLUMN_TITLES, list(enumerate(names)))
    gap = pictures.GAP
    width = gap + 3 * 52 + 2 * gap + gap
    assert picture.shape[1] == width and picture.dtype == np.uint8
    body = 30 + gap + 20
    # The panels, at their column's left edge, below the title band.
    top = next(y for y in range(picture.shape[0])
               if np.array_equal(picture[y, gap:gap + 40], rows[0][0][0]))
    for r, (h, w) in enumerate(sizes):
        y = top + (0 if r == 0 else 30 + gap)
        for c in range(3):
            x = gap + c * (52 + gap)
            np.testing.assert_array_equal(picture[y:y + h, x:x + w], rows[r][c])
    # A title band: dark text over each of the three columns.
    band = picture[:top]
    assert top >= 10
    for c in range(3):
        x = gap + c * (52 + gap)
        assert (band[:, x:x + 52].max(axis=-1) < 100).any(), demo.COLUMN_TITLES[c]
    # A legend band below the panels: every class's colour swatch and dark text.
    legend = picture[top + body:]
    assert legend.shape[0] >= pictures.SWATCH + gap
    for index in range(len(names)):
        colour = VOC_PALETTE[index]
        assert (legend == colour).all(axis=-1).sum() >= (pictures.SWATCH - 2) ** 2, names[index]
    # Class names: more dark pixels than the black swatch of class 0 and every outline.
    swatches = pictures.SWATCH ** 2 + 4 * pictures.SWATCH * (len(names) - 1)
    assert (legend.max(axis=-1) < 100).sum() > swatches + 100


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """(output folder, exit status, stdout, the legends drawn) of one whole demo run of 2
    updates."""
    out = tmp_path_factory.mktemp("demo_run") / "demo"
    legends, printed = [], io.StringIO()
    drawn = demo.picture
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(printed):
        monkeypatch.setattr(demo, "picture", lambda rows, titles, legend, palette: (
            legends.append(legend), drawn(rows, titles, legend, palette))[1])
        status = demo.main(["--output-dir", str(out), "--num-steps", "2"])
    return out, status, printed.getvalue(), legends


def test_demo_lists_every_folder_it_wrote(demo_run):
    out, status, stdout, legends = demo_run
    assert status in (0, 1)  # 2 updates may not beat chance; the outputs are all written
    listing = stdout.split("Outputs (every folder written):", 1)[1].strip().splitlines()
    listed = [line.split()[-1] for line in listing if not line.lstrip().startswith("(")]
    assert listed and all(os.path.exists(path) for path in listed), listed
    folders = [path for path in listed if os.path.isdir(path)]
    for dirpath, _, _ in os.walk(out):
        if dirpath != str(out):
            assert any(dirpath == f or dirpath.startswith(f + os.sep) for f in folders), dirpath
    grid = os.path.join(out, "predictions_grid.png")
    assert grid in listed
    picture = read_image(grid)
    smallest = min(shapes.make_shapes_dataset.__defaults__[2])  # of the shapes' sides
    assert picture.shape[0] > demo.GRID_IMAGES * smallest and picture.shape[1] > 3 * smallest
    # The legend's names are those training recorded in the checkpoint.
    assert checkpoint.describe(str(out / "snapshots")).class_names == tuple(shapes.CLASSES)
    assert [name for _, name in legends[0]] == [*shapes.CLASSES, "ignored"]


def trained(out):
    """(update count, recorded total, seed) of the demo's training checkpoint in `out`."""
    record, step = run_record.read(tf.train.latest_checkpoint(os.path.join(out, "snapshots")))
    return step, record["num_steps"], record["random_seed"]


@pytest.fixture
def training_only(monkeypatch):
    """The demo up to its training: the later steps (tested above) are stubbed out."""
    monkeypatch.setattr(demo, "evaluate_step", lambda data, out, snapshots: (1.0, "r", "p"))
    monkeypatch.setattr(demo, "picture_step", lambda data, out, snapshots: ("g", "m"))
    monkeypatch.setattr(demo, "caffe_step", lambda data, out, seed: ("f", "c/k", ["a", "b"], 0.0))


def test_a_rerun_with_other_settings_starts_over(demo_run, tmp_path, capsys, training_only):
    """Issue 18 item 9: --num-steps or --seed changed after a run: a clean new run, said so;
    the same settings again: the finished training is reused."""
    out = tmp_path / "demo"
    shutil.copytree(demo_run[0], out)  # the checkpoint state file holds relative names
    assert trained(out) == (2, 2, 0)
    assert json.loads((out / demo.SETTINGS_FILE).read_text()) == {"num_steps": 2, "seed": 0}
    capsys.readouterr()

    assert demo.main(["--output-dir", str(out), "--num-steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "starting over" not in printed
    assert "already trained by an earlier run with these settings" in printed

    assert demo.main(["--output-dir", str(out), "--num-steps", "1"]) == 0
    printed = capsys.readouterr()
    assert f"{out} holds a demo run with --num-steps 2 --seed 0: starting over with " \
           "--num-steps 1 --seed 0" in printed.out
    assert "already trained" not in printed.out + printed.err
    assert trained(out) == (1, 1, 0)

    assert demo.main(["--output-dir", str(out), "--num-steps", "1", "--seed", "7"]) == 0
    assert "starting over with --num-steps 1 --seed 7" in capsys.readouterr().out
    assert trained(out) == (1, 1, 7)


def test_a_folder_with_other_files_is_refused_with_the_demo_flag(tmp_path):
    out = tmp_path / "mine"
    (out / "data").mkdir(parents=True)
    (out / "data" / "keep.txt").write_text("not the demo's")
    with pytest.raises(DeepLabError) as refusal:
        demo.main(["--output-dir", str(out), "--num-steps", "1"])
    assert str(refusal.value) == (f"--output-dir {out} holds data but no demo_settings.json, so "
                                  f"not a demo run: give another --output-dir, e.g. "
                                  f"--output-dir {out}_2")
    assert (out / "data" / "keep.txt").exists()
    # The folder it names is new: the demo runs there as in any new folder (above).
    assert not os.path.lexists(f"{out}_2")
