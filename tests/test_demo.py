"""demo.py: the picture (column titles, class legend) and the listing of every folder it wrote."""

import os

import numpy as np

import demo
from deeplab_resnet import shapes, utils


def test_picture_has_column_titles_and_a_colour_legend():
    rng = np.random.default_rng(0)
    sizes = [(30, 40), (20, 52)]  # rows of different sizes: columns are aligned to the widest
    rows = [[rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(3)]
            for h, w in sizes]
    names = ["background", "square", "disc", "triangle"]
    picture = demo.picture(rows, demo.COLUMN_TITLES, list(enumerate(names)))
    gap = demo.GAP
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
    assert legend.shape[0] >= demo.SWATCH + gap
    for index in range(len(names)):
        colour = utils.VOC_PALETTE[index]
        assert (legend == colour).all(axis=-1).sum() >= (demo.SWATCH - 2) ** 2, names[index]
    # Class names: more dark pixels than the black swatch of class 0 and every outline.
    swatches = demo.SWATCH ** 2 + 4 * demo.SWATCH * (len(names) - 1)
    assert (legend.max(axis=-1) < 100).sum() > swatches + 100


def test_demo_lists_every_folder_it_wrote(tmp_path, capsys):
    out = tmp_path / "demo"
    status = demo.main(["--output-dir", str(out), "--num-steps", "2"])
    assert status in (0, 1)  # 2 updates may not beat chance; the outputs are all written
    stdout = capsys.readouterr().out
    listing = stdout.split("Outputs (every folder written):", 1)[1].strip().splitlines()
    listed = [line.split()[-1] for line in listing if not line.lstrip().startswith("(")]
    assert listed and all(os.path.exists(path) for path in listed), listed
    folders = [path for path in listed if os.path.isdir(path)]
    for dirpath, _, _ in os.walk(out):
        if dirpath != str(out):
            assert any(dirpath == f or dirpath.startswith(f + os.sep) for f in folders), dirpath
    grid = os.path.join(out, "predictions_grid.png")
    assert grid in listed
    picture = utils.read_image(grid)
    smallest = min(shapes.make_shapes_dataset.__defaults__[2])  # of the shapes' sides
    assert picture.shape[0] > demo.GRID_IMAGES * smallest and picture.shape[1] > 3 * smallest
