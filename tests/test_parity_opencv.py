"""Parity with an independent Caffe implementation: OpenCV's dnn module.

Each test writes its own caffemodel with seeded random weights (BatchNorm scale
factor != 1, some tiny variances so eps matters, statistics calibrated so the
deep net stays finite), converts it with convert.py, runs our side (inference.py
for DeepLab, the emitted code for ResNet-50) and OpenCV on the same
preprocessed input, and requires max|diff| <= 1e-5 * max|output|. The commands
run in-process, as their scripts run them.
"""

import importlib.util

import numpy as np
import pytest

from caffe_fixtures import write_random_caffemodel
from conftest import run_command
from deeplab_resnet.cli import convert, inference
from deeplab_resnet.model.network import IMG_MEAN

cv2 = pytest.importorskip("cv2")

TOLERANCE = 1e-5


def run_script(main, capfd, *args):
    status, _, err = run_command(main, args, capfd)
    assert status == 0, err[-3000:]


def opencv_net(prototxt, caffemodel):
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    # Winograd 3x3 convolutions trade accuracy for speed; we compare exact arithmetic.
    net.enableWinograd(False)
    return net


def opencv_forward(net, bgr_minus_mean_nhwc, blob):
    net.setInput(np.ascontiguousarray(bgr_minus_mean_nhwc.transpose(0, 3, 1, 2), dtype=np.float32))
    return net.forward(blob)


def assert_parity(ours, theirs):
    assert ours.shape == theirs.shape
    scale = np.abs(theirs).max()
    assert scale > 0 and np.isfinite(ours).all()
    diff = np.abs(ours.astype(np.float64) - theirs).max()
    print(f"parity: max|diff| / max|out| = {diff / scale:.2g}")
    assert diff <= TOLERANCE * scale, f"max|diff| {diff:.3g} > {TOLERANCE} * {scale:.3g}"


def test_deeplab_inference_matches_opencv(tmp_path, deeplab_deploy_prototxt, capfd):
    from PIL import Image

    model = tmp_path / "deeplab.caffemodel"
    write_random_caffemodel(deeplab_deploy_prototxt, model, seed=11, bn_factor=999.98,
                            calibrate=True, calibration=dict(size=65))
    run_script(convert.main, capfd, deeplab_deploy_prototxt, "--caffemodel", model,
               "--ckpt-path", tmp_path / "ckpt" / "deeplab")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    sizes = {"odd": (97, 89), "even": (96, 104)}
    rgb = {}
    for stem, (h, w) in sizes.items():
        rgb[stem] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb[stem]).save(images / f"{stem}.png")
    out = tmp_path / "out"
    run_script(inference.main, capfd, images, tmp_path / "ckpt" / "deeplab", "--save-dir", out,
               "--save-logits")
    net = opencv_net(deeplab_deploy_prototxt, model)
    for stem, image in rgb.items():
        ours = np.load(out / f"{stem}_logits.npy", allow_pickle=False)
        blob = image[None, :, :, ::-1].astype(np.float32) - IMG_MEAN
        theirs = opencv_forward(net, blob, "fc1_voc12")[0].transpose(1, 2, 0)
        assert_parity(ours, theirs)


def test_resnet50_emitted_code_matches_opencv(tmp_path, resnet50_deploy_prototxt, capfd):
    model = tmp_path / "resnet50.caffemodel"
    write_random_caffemodel(resnet50_deploy_prototxt, model, seed=12, bn_factor=0.5,
                            calibrate=True, calibration=dict(size=224))
    run_script(convert.main, capfd, resnet50_deploy_prototxt, "--caffemodel", model,
               "--data-output-path", tmp_path / "w.npz",
               "--code-output-path", tmp_path / "resnet50.py")
    spec = importlib.util.spec_from_file_location("resnet50_emitted", tmp_path / "resnet50.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ours_net = module.Net().load(tmp_path / "w.npz")
    net = opencv_net(resnet50_deploy_prototxt, model)
    rng = np.random.default_rng(4)
    # 224 as in the prototxt; 211 (odd) and 200 (even) also reach pool5 at 7x7.
    for size in (224, 211, 200):
        x = rng.normal(0, 60, (1, size, size, 3)).astype(np.float32)
        outs = ours_net(x, outputs=["fc1000", "prob"])
        assert_parity(outs["fc1000"].numpy(), opencv_forward(net, x, "fc1000"))
        np.testing.assert_allclose(outs["prob"].numpy().sum(), 1.0, rtol=1e-5)
