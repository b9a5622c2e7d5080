"""Tiled (slide) inference and batched inference (issue 29, items 5 and 6)."""

import numpy as np
import pytest
from PIL import Image

from conftest import run_command, tiny_model, with_trained_statistics
from deeplab_resnet import Segmenter
from deeplab_resnet.cli import evaluate, inference
from deeplab_resnet.data import shapes
from deeplab_resnet.errors import SettingError
from deeplab_resnet.predict import tiling
from deeplab_resnet.weights import checkpoint

CLASSES = 4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    params = with_trained_statistics(tiny_model(CLASSES, seed=3), seed=8)
    return checkpoint.save_params(params, tmp_path_factory.mktemp("ckpt") / "model", "tiny",
                                  CLASSES)


@pytest.fixture(scope="module")
def whole(ckpt):
    return Segmenter.load(ckpt)


def _image(size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)


def _slide(segmenter, image, tile, overlap):
    """mmsegmentation's slide inference, written out: tiles every stride, the last ones
    moved back to the edge, probabilities summed and divided by the count."""
    (height, width), (th, tw) = image.shape[:2], tile
    th, tw = min(th, height), min(tw, width)
    sh, sw = max(1, round(th * (1 - overlap))), max(1, round(tw * (1 - overlap)))
    total = np.zeros(image.shape[:2] + (CLASSES,))
    count = np.zeros(image.shape[:2])
    for i in range(max(height - th + sh - 1, 0) // sh + 1):
        for j in range(max(width - tw + sw - 1, 0) // sw + 1):
            y, x = min(i * sh, height - th), min(j * sw, width - tw)
            total[y:y + th, x:x + tw] += segmenter.predict(image[y:y + th, x:x + tw]).probabilities
            count[y:y + th, x:x + tw] += 1
    return total / count[..., None]


@pytest.mark.parametrize("size,tile,overlap", [((150, 230), (64, 80), 1 / 3),
                                               ((97, 61), (40, 100), 0.5),
                                               ((70, 70), (33, 33), 0.0)])
def test_tiles_average_the_probabilities_of_each_tile_predicted_whole(
        ckpt, whole, size, tile, overlap):
    tiled = Segmenter.load(ckpt, tile=tile, tile_overlap=overlap)
    image = _image(size)
    prediction = tiled.predict(image)
    expected = _slide(whole, image, tile, overlap)
    np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-5)
    assert prediction.logits is None
    np.testing.assert_array_equal(tiled.predictor.predict_labels(image), prediction.labels)
    top2 = np.sort(expected, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4  # averaged saturated tiles tie exactly
    np.testing.assert_array_equal(prediction.labels[clear], expected.argmax(-1)[clear])
    assert len(np.unique(prediction.labels)) > 1


def test_an_image_within_a_tile_is_predicted_whole(ckpt, whole):
    tiled = Segmenter.load(ckpt, tile=(64, 80))
    for size in [(64, 80), (30, 41), (1, 1)]:
        image = _image(size, seed=1)
        a, b = tiled.predict(image), whole.predict(image)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.probabilities, b.probabilities)
        np.testing.assert_array_equal(a.logits, b.logits)


def test_bands_hold_about_one_row_of_tiles():
    seen = []

    def probabilities_many(tiles):
        seen.extend(t.shape for t in tiles)
        return [np.full(t.shape[:2] + (2,), 0.5, np.float32) for t in tiles]

    tiler = tiling.Tiler(probabilities_many, (50, 60), 1 / 3, batch_size=3)
    bands = [(first, band.shape) for first, band in tiler.bands(_image((400, 300)))]
    assert [first for first, _ in bands] == sorted(first for first, _ in bands)
    assert sum(shape[0] for _, shape in bands) == 400
    assert max(shape[0] for _, shape in bands) <= 50
    assert set(seen) == {(50, 60, 3)}
    np.testing.assert_array_equal(tiler.labels(_image((400, 300))), 0)


def test_tile_settings_are_checked(ckpt):
    with pytest.raises(SettingError, match="tile_overlap"):
        Segmenter.load(ckpt, tile=(64, 64), tile_overlap=1.0)
    with pytest.raises(SettingError, match="tile"):
        Segmenter.load(ckpt, tile=(64, 0))


def test_batches_give_the_labels_of_one_at_a_time(whole, monkeypatch):
    sizes = [(40, 50), (40, 50), (40, 50), (33, 45), (40, 50), (40, 50), (21, 17)]
    images = [_image(size, seed=i) for i, size in enumerate(sizes)]
    alone = [whole.predict(image) for image in images]
    batches = []
    run = whole.predictor.probabilities_many
    monkeypatch.setattr(whole.predictor, "probabilities_many",
                        lambda group: (batches.append(len(group)), run(group))[1])
    together = list(whole.predict_many(images, batch_size=2))
    assert batches == [2, 1, 1, 2, 1]
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    with pytest.raises(SettingError, match="batch_size"):
        list(whole.predict_many(images, batch_size=0))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=1,
                                      num_val=5, size=(40, 48), seed=4)


def test_evaluate_and_inference_take_tiles_and_batches(ckpt, data, tmp_path, capfd):
    base = ["--data-dir", data["root"], "--data-list", data["val"], "--restore-from", ckpt]
    scores = {}
    for name, extra in (("one", []), ("batched", ["--batch-size", "3"]),
                        ("tiled", ["--tile", "24,24", "--batch-size", "2"])):
        status, out, err = run_command(evaluate.main, base + extra, capfd)
        assert status == 0, err
        scores[name] = out.strip().splitlines()[-1]
    assert scores["one"] == scores["batched"] and scores["one"].startswith("Mean IoU")
    folder = tmp_path / "images"
    folder.mkdir()
    for i, size in enumerate([(50, 60), (50, 60), (31, 90)]):
        Image.fromarray(_image(size, seed=i)).save(folder / f"im{i}.png")
    masks = {}
    for name, extra in (("one", []), ("batched", ["--batch-size", "2"]),
                        ("tiled", ["--tile", "32,32", "--tile-overlap", "0.25"])):
        status, out, err = run_command(inference.main, [folder, ckpt, "--save-dir",
                                                        tmp_path / name] + extra, capfd)
        assert status == 0, err
        masks[name] = [np.asarray(Image.open(tmp_path / name / f"im{i}_mask.png"))
                       for i in range(3)]
    for a, b in zip(masks["one"], masks["batched"]):
        np.testing.assert_array_equal(a, b)
    tiled = Segmenter.load(ckpt, tile=(32, 32), tile_overlap=0.25)
    np.testing.assert_array_equal(masks["tiled"][2], tiled.predict(str(folder / "im2.png")).labels)
    status, _, err = run_command(inference.main, [folder, ckpt, "--tile", "32,32",
                                                  "--save-logits"], capfd)
    assert status == 2 and "--save-logits" in err
