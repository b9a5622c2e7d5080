"""kaffe.writer: TF-layout weights -> caffemodel -> converter gives the same weights back."""

import numpy as np
import pytest

from deeplab_resnet import deploy
from deeplab_resnet.model import DeepLabResNet
from kaffe.convert import load_net, read_weights
from kaffe.writer import write_caffemodel


def random_like(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(0.1, 2.0, shape).astype(np.float32) for name, shape in shapes.items()}


@pytest.mark.parametrize("bn_factor", [1.0, 0.25])
def test_deeplab_round_trip(tmp_path, bn_factor):
    text = deploy.deploy_prototxt("tiny", 3)
    params = {k: v.numpy() for k, v in DeepLabResNet("tiny", 3, seed=5).params.items()}
    params.update(random_like({k: v.shape for k, v in params.items() if k.endswith("/variance")}))
    path = write_caffemodel(None, params, tmp_path / "tiny.caffemodel", bn_factor=bn_factor, text=text)
    back = read_weights(load_net(text=text), path)
    assert sorted(back) == sorted(params)
    for name, value in params.items():
        np.testing.assert_allclose(back[name], value, rtol=1e-6, err_msg=name)


def test_inner_product_round_trip(tmp_path, resnet50_deploy_prototxt):
    converted = load_net(resnet50_deploy_prototxt)
    params = random_like(converted.param_shapes(), seed=1)
    path = write_caffemodel(resnet50_deploy_prototxt, params, tmp_path / "r50.caffemodel")
    back = read_weights(converted, path)
    for name in ("fc1000/weights", "fc1000/biases", "conv1/weights", "conv1/biases",
                 "bn_conv1/scale", "res5c_branch2c/weights"):
        np.testing.assert_allclose(back[name], params[name], rtol=1e-6, err_msg=name)
