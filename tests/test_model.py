"""The DeepLab-ResNet network: names, sizes, variants, variable groups."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_resnet.model.arch import architecture
from deeplab_resnet.model.network import DeepLabResNet, output_size, preprocess


def test_resnet101_layer_names_and_counts():
    arch = architecture("resnet101", 21)
    names = [c.name for c in arch.convs]
    assert len(names) == 108  # 104 backbone convolutions + 4 ASPP branches
    assert names[0] == "conv1"
    assert "res3b3_branch2c" in names and "res4b22_branch2b" in names and "res5c_branch2c" in names
    assert names[-4:] == [f"fc1_voc12_c{i}" for i in range(4)]
    assert [b.name for b in arch.blocks][:7] == ["res2a", "res2b", "res2c", "res3a", "res3b1",
                                                 "res3b2", "res3b3"]
    bns = [c.bn for c in arch.convs if c.bn]
    assert len(bns) == 104 and bns[0] == "bn_conv1" and "bn4b22_branch2b" in bns


def test_geometry_matches_the_released_net():
    convs = {c.name: c for c in architecture("resnet101", 21).convs}
    assert (convs["conv1"].stride, convs["conv1"].pad, convs["conv1"].bias) == (2, 3, False)
    assert convs["res3a_branch1"].stride == 2 and convs["res3a_branch2a"].stride == 2
    assert convs["res3a_branch2b"].stride == 1
    assert (convs["res4b7_branch2b"].dilation, convs["res4b7_branch2b"].pad) == (2, 2)
    assert (convs["res5b_branch2b"].dilation, convs["res5b_branch2b"].pad) == (4, 4)
    for i, rate in enumerate((6, 12, 18, 24)):
        head = convs[f"fc1_voc12_c{i}"]
        assert (head.dilation, head.pad, head.bias, head.out_channels) == (rate, rate, True, 21)
    strided = {n for n, c in convs.items() if c.stride != 1}
    assert strided == {"conv1", "res3a_branch1", "res3a_branch2a"}


@pytest.mark.parametrize("size,expected", [(321, 41), (320, 41), (513, 65), (64, 9), (65, 9),
                                           (97, 13), (96, 13)])
def test_output_size_is_caffes(size, expected):
    assert output_size(size) == expected
    model = DeepLabResNet("tiny", 3)
    assert model(tf.zeros([1, size, size + 1, 3])).shape[1:3] == (expected, output_size(size + 1))


def test_parameter_count_resnet101():
    model = DeepLabResNet("resnet101", 21)
    conv = sum(int(np.prod(v.shape)) for k, v in model.params.items()
               if k.endswith(("/weights", "/biases")))
    assert 43.85e6 < conv < 43.95e6  # the released net's ~43.9 M convolution parameters


@pytest.mark.parametrize("variant,blocks", [("resnet50", 16), ("resnet152", 50), ("tiny", 4)])
def test_variants(variant, blocks):
    arch = architecture(variant, 5)
    assert len(arch.blocks) == blocks
    assert arch.head[0].out_channels == 5


def test_resnet152_and_resnet50_block_names():
    names152 = [b.name for b in architecture("resnet152").blocks]
    assert "res3b7" in names152 and "res4b35" in names152 and "res5c" in names152
    names50 = [b.name for b in architecture("resnet50").blocks]
    assert names50[3:7] == ["res3a", "res3b", "res3c", "res3d"] and "res4f" in names50


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model variant 'resnet18'"):
        architecture("resnet18")


def test_frozen_batchnorm_by_default():
    model = DeepLabResNet("tiny", 3)
    trainable = {v.name.split(":")[0] for v in model.trainable_variables}
    assert not any(n.endswith(("/mean", "/variance", "/scale", "/offset")) for n in trainable)
    assert model.bn_trainables() == []
    x = tf.random.stateless_normal([2, 33, 33, 3], seed=[0, 1])
    before = model.params["bn_conv1/mean"].numpy().copy()
    np.testing.assert_allclose(model(x, training=True), model(x, training=False), rtol=1e-6)
    np.testing.assert_array_equal(before, model.params["bn_conv1/mean"].numpy())


def test_trainable_batchnorm_updates_statistics():
    model = DeepLabResNet("tiny", 3, train_bn=True)
    assert len(model.bn_trainables()) == 2 * len([c for c in model.arch.convs if c.bn])
    x = tf.random.stateless_normal([2, 33, 33, 3], seed=[0, 1]) + 5.0
    model(x, training=True)
    assert not np.allclose(model.params["bn_conv1/mean"].numpy(), 0.0)


def test_variable_groups_partition_the_learnable_weights():
    model = DeepLabResNet("tiny", 4)
    backbone, head_w, head_b = model.backbone_weights(), model.head_weights(), model.head_biases()
    assert len(head_w) == 4 and len(head_b) == 4
    assert len(backbone) == len(model.arch.convs) - 4
    assert len(model.weight_decay_variables()) == len(backbone) + 4


def test_preprocess_is_bgr_minus_mean():
    rgb = tf.constant([[[[10.0, 20.0, 30.0]]]])
    bgr = preprocess(rgb).numpy().ravel()
    # The mean (B, G, R) of the released models' training images, as their Caffe deploy uses.
    mean_bgr = np.array([104.00698793, 116.66876762, 122.67891434])
    np.testing.assert_allclose(bgr, np.array([30.0, 20.0, 10.0]) - mean_bgr, rtol=1e-6)


def test_trainable_batchnorm_moving_average_is_caffes_normalised_one():
    model = DeepLabResNet("tiny", 3, train_bn=True, bn_momentum=0.9)
    batches = [tf.random.stateless_normal([2, 33, 33, 3], seed=[i, 7]) * (i + 1) for i in range(3)]
    weighted_means, weights = [], []
    for i, x in enumerate(batches):
        # What bn_conv1 sees: the stem convolution's output.
        conv = model.arch.stem
        y = tf.nn.conv2d(x, model.params["conv1/weights"], 2, [[0, 0], [3, 3], [3, 3], [0, 0]])
        weighted_means = [m * 0.9 for m in weighted_means] + [tf.reduce_mean(y, [0, 1, 2]).numpy()]
        weights = [w * 0.9 for w in weights] + [1.0]
        model(x, training=True)
        expected = sum(weighted_means) / sum(weights)
        np.testing.assert_allclose(model.params[f"{conv.bn}/mean"].numpy(), expected, rtol=1e-4,
                                   atol=1e-4)
    assert model.meta["bn_factor"].numpy() == pytest.approx(1 + 0.9 + 0.81)


def test_loaded_statistics_count_as_a_long_history(tmp_path):
    from deeplab_resnet.weights import checkpoint
    model = DeepLabResNet("tiny", 3)
    checkpoint.save_params({k: v.numpy() for k, v in model.params.items()}, tmp_path / "c",
                           "tiny", 3)
    loaded = checkpoint.load_weights(tmp_path / "c", train_bn=True, bn_momentum=0.99)
    assert loaded.meta["bn_factor"].numpy() == pytest.approx(100.0)


def _with_statistics(fold_bn, train_bn=False):
    """A tiny net with non-trivial BatchNorm/Scale parameters (the same for every call)."""
    net = DeepLabResNet("tiny", 3, seed=2, fold_bn=fold_bn, train_bn=train_bn)
    rng = np.random.default_rng(7)
    for name, var in net.params.items():
        n = var.shape[-1]
        if name.endswith("/variance"):
            var.assign(rng.uniform(0.5, 2.0, n).astype(np.float32))
        elif name.endswith(("/mean", "/offset", "/biases")):
            var.assign(rng.normal(0.0, 0.2, n).astype(np.float32))
        elif name.endswith("/scale"):
            var.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
    return net


def _value_and_gradients(net, images, training):
    weights = [v for k, v in net.params.items() if k.endswith(("/weights", "/biases"))]
    with tf.GradientTape() as tape:
        logits = net(images, training=training)
        loss = tf.reduce_sum(tf.square(logits))
    return logits.numpy(), [g.numpy() for g in tape.gradient(loss, weights)]


def test_folded_frozen_batchnorm_is_the_same_function_with_the_same_gradients():
    images = tf.constant(np.random.default_rng(3).normal(0, 50, (2, 33, 41, 3)), tf.float32)
    folded, folded_grads = _value_and_gradients(_with_statistics(True), images, True)
    plain, plain_grads = _value_and_gradients(_with_statistics(False), images, True)
    np.testing.assert_allclose(folded, plain, rtol=1e-5, atol=1e-5 * np.abs(plain).max())
    for a, b in zip(folded_grads, plain_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


def test_trained_batchnorm_keeps_separate_operations_in_training():
    images = tf.constant(np.random.default_rng(4).normal(0, 50, (2, 33, 33, 3)), tf.float32)
    folded, _ = _value_and_gradients(_with_statistics(True, train_bn=True), images, True)
    plain, _ = _value_and_gradients(_with_statistics(False, train_bn=True), images, True)
    np.testing.assert_array_equal(folded, plain)
