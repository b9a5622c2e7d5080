"""caffe.deploy_prototxt: the generated deploy prototxts against the released one and misc/."""

import os

import pytest

from deeplab_resnet.weights import caffe
from deeplab_resnet.weights.caffe import load_net
from deeplab_resnet.cli import deploy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The committed prototxts and what they are generated from.
MISC_FILES = {
    "misc/deploy.prototxt": ("resnet101", 21),
    "misc/deploy_resnet50.prototxt": ("resnet50", 21),
    "misc/deploy_resnet152.prototxt": ("resnet152", 21),
}


def summary(layer):
    """What a deploy prototxt says about a layer, with Caffe's defaults applied."""
    a = dict(layer.attrs)
    out = dict(name=layer.name, type=layer.type, bottoms=layer.bottoms, tops=layer.tops)
    if layer.type == "Convolution":
        out.update({k: a[k] for k in ("num_output", "kernel", "pad", "stride", "dilation", "bias",
                                      "group")})
    elif layer.type == "Pooling":
        out.update({k: a[k] for k in ("method", "kernel", "stride", "pad", "global_pooling",
                                      "ceil_mode")})
    elif layer.type == "BatchNorm":
        p = layer.proto.batch_norm_param
        out.update(eps=a["eps"], use_global_stats=p.use_global_stats)
    elif layer.type == "Scale":
        out.update(bias=a["bias"])
    elif layer.type == "Eltwise":
        out.update(a)
    elif layer.type == "ReLU":
        out.update(a)
    return out


@pytest.mark.parametrize("path,variant_classes", sorted(MISC_FILES.items()))
def test_misc_files_are_generated(path, variant_classes):
    with open(os.path.join(ROOT, path)) as f:
        assert f.read() == caffe.deploy_prototxt(*variant_classes), \
            f"{path} is stale: deeplab-deploy --model {variant_classes[0]} --output {path}"


def test_misc_deploy_matches_released_prototxt(deeplab_deploy_prototxt):
    ours = load_net(os.path.join(ROOT, "misc/deploy.prototxt")).graph
    released = load_net(deeplab_deploy_prototxt).graph
    assert ours.inputs == released.inputs == {"data": (1, 3, 321, 321)}
    assert len(ours.layers) == len(released.layers)
    for mine, theirs in zip(ours.layers, released.layers):
        assert summary(mine) == summary(theirs)
    assert ours.outputs == released.outputs == ("fc1_voc12",)


@pytest.mark.parametrize("variant,classes", [("resnet50", 21), ("resnet152", 5), ("tiny", 2)])
def test_generated_prototxt_is_the_model(variant, classes):
    converted = load_net(text=caffe.deploy_prototxt(variant, classes))
    assert converted.deeplab == (variant, classes)


def test_cli_writes_prototxt_and_says_what(tmp_path, capsys):
    out = tmp_path / "d.prototxt"
    assert deploy.main(["--model", "tiny", "--num-classes", "4", "--output", str(out)]) == 0
    assert out.read_text() == caffe.deploy_prototxt("tiny", 4)
    assert capsys.readouterr().out == (f"{out}: deploy prototxt of DeepLab tiny, 4 classes, "
                                       "input 1x3x321x321\n")
