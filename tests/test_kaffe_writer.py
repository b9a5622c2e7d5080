"""caffe.write_caffemodel (kaffe.transforms.params_to_blobs + kaffe.writer): TF-layout weights
-> caffemodel -> the converter gives the same weights back."""

import numpy as np
import pytest

from deeplab_resnet import cli
from deeplab_resnet.weights import caffe
from deeplab_resnet.errors import SettingError
from deeplab_resnet.weights.caffe import load_net, open_caffemodel, write_caffemodel
from deeplab_resnet.model.network import DeepLabResNet


def random_like(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(0.1, 2.0, shape).astype(np.float32) for name, shape in shapes.items()}


@pytest.mark.parametrize("bn_factor", [1.0, 0.25])
def test_deeplab_round_trip(tmp_path, bn_factor):
    text = caffe.deploy_prototxt("tiny", 3)
    params = {k: v.numpy() for k, v in DeepLabResNet("tiny", 3, seed=5).params.items()}
    params.update(random_like({k: v.shape for k, v in params.items() if k.endswith("/variance")}))
    path = write_caffemodel(None, params, tmp_path / "tiny.caffemodel", bn_factor=bn_factor,
                            text=text)
    back = open_caffemodel(path, net=load_net(text=text)).read_all()
    assert sorted(back) == sorted(params)
    for name, value in params.items():
        np.testing.assert_allclose(back[name], value, rtol=1e-6, err_msg=name)


def test_inner_product_round_trip(tmp_path, resnet50_deploy_prototxt):
    converted = load_net(resnet50_deploy_prototxt)
    params = random_like(converted.param_shapes(), seed=1)
    path = write_caffemodel(resnet50_deploy_prototxt, params, tmp_path / "r50.caffemodel")
    back = open_caffemodel(path, net=converted).read_all()
    for name in ("fc1000/weights", "fc1000/biases", "conv1/weights", "conv1/biases",
                 "bn_conv1/scale", "res5c_branch2c/weights"):
        np.testing.assert_allclose(back[name], params[name], rtol=1e-6, err_msg=name)


def test_caffemodel_without_the_voc_head_loads_its_backbone_for_a_new_head(tmp_path):
    """Like DeepLab's COCO-pretrained init.caffemodel: another head, other class count."""
    from deeplab_resnet.weights import checkpoint
    text = caffe.deploy_prototxt("tiny", 91).replace("fc1_voc12", "fc1_coco")
    source = DeepLabResNet("tiny", 91, seed=2)
    params = {k.replace("fc1_voc12", "fc1_coco"): v.numpy() for k, v in source.params.items()}
    path = write_caffemodel(None, params, tmp_path / "init.caffemodel", text=text)
    with pytest.raises(SettingError, match="or add new_head") as error:
        checkpoint.load_weights(path, "tiny")
    assert "or add --not-restore-last" in error.value.naming(cli.flag_name)
    model = checkpoint.load_weights(path, "tiny", new_head=True)
    assert model.num_classes == 21
    for name, value in params.items():
        if not name.startswith("fc1_"):
            np.testing.assert_allclose(model.params[name].numpy(), value, rtol=1e-6, err_msg=name)


def test_new_head_takes_the_class_flag_not_the_restored_count(tmp_path):
    from deeplab_resnet.weights import checkpoint
    text = caffe.deploy_prototxt("tiny", 91)
    params = {k: v.numpy() for k, v in DeepLabResNet("tiny", 91).params.items()}
    path = write_caffemodel(None, params, tmp_path / "coco.caffemodel", text=text)
    assert checkpoint.load_weights(path, "tiny").num_classes == 91
    assert checkpoint.load_weights(path, "tiny", new_head=True).num_classes == 21
    assert checkpoint.load_weights(path, "tiny", num_classes=4, new_head=True).num_classes == 4
