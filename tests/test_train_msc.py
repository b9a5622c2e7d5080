"""Multi-scale training: the MSC loss, exact gradient accumulation, train_msc.py's flags."""

import numpy as np
import pytest

from caffe_fixtures import caffe_interp, deeplab_label_shrink, interp_size
import tensorflow as tf

from deeplab_resnet import training
from deeplab_resnet.data import shapes
from deeplab_resnet.cli import train_flags
from deeplab_resnet.model.network import DeepLabResNet
from deeplab_resnet.training import losses, optim, step

SCALES = (1.0, 0.75, 0.5)


def numpy_ce(logits, labels, ignore=255):
    small = deeplab_label_shrink(labels, *logits.shape[1:3])
    valid = small != ignore
    log_p = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    picked = np.take_along_axis(log_p, np.where(valid, small, 0)[..., None], -1)[..., 0]
    return -picked[valid].mean()


def test_msc_loss_is_fused_plus_every_scale():
    rng = np.random.default_rng(1)
    model = DeepLabResNet("tiny", 3, seed=1)
    images = tf.constant(rng.normal(0, 40, (2, 49, 49, 3)), tf.float32)
    labels = rng.integers(0, 3, (2, 49, 49)).astype(np.int32)
    labels[:, :5] = 255
    loss, _, _ = losses.Objective(model, 255, SCALES)(images, tf.constant(labels))
    # DeepLab's MSC net: Interp shrinks the input (49 -> 37, 25), zooms the logits back.
    outputs = [model(images).numpy()]
    for shrink, zoom in ((4, 3), (2, 1)):
        size = [interp_size(49, shrink, zoom)] * 2
        outputs.append(model(tf.constant(caffe_interp(images.numpy(), *size))).numpy())
    fused = outputs[0]
    for out in outputs[1:]:
        fused = np.maximum(fused, caffe_interp(out, *fused.shape[1:3]))
    expected = numpy_ce(fused, labels) + sum(numpy_ce(out, labels) for out in outputs)
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def make_trainer(scales):
    model = DeepLabResNet("tiny", 3, seed=2)
    params = optim.sgd_params(model)
    optimizer = optim.CaffeSGD(params, momentum=0.9, weight_decay=5e-4)
    objective = losses.Objective(model, 255, scales)
    return model, step.Trainer(objective, optimizer, {k: p[0] for k, p in params.items()})


@pytest.mark.parametrize("scales", [SCALES, None])
def test_accumulated_batches_equal_one_big_batch(scales):
    """4 accumulated mini-batches of 1 image == one mini-batch of 4 (per-image mean loss)."""
    rng = np.random.default_rng(3)
    n, size = 4, 41
    images = rng.normal(0, 40, (n, size, size, 3)).astype(np.float32)
    # No ignored pixels: every image weighs the same in the batch mean.
    labels = rng.integers(0, 3, (n, size, size)).astype(np.int32)
    deltas = []
    for shape in ((n, 1), (1, n)):
        model, trainer = make_trainer(scales)
        before = {k: v.numpy() for k, v in model.params.items()}
        loss, _, finite, *_ = trainer.step(images.reshape(*shape, size, size, 3),
                                          labels.reshape(*shape, size, size), 0.01).read()
        assert finite and np.isfinite(loss)
        deltas.append({k: v.numpy() - before[k] for k, v in model.params.items()})
    accumulated, batched = deltas
    for key, delta in batched.items():
        scale = max(np.abs(delta).max(), 1e-12)
        np.testing.assert_allclose(accumulated[key], delta, rtol=1e-5, atol=1e-5 * scale,
                                   err_msg=key)
    assert np.abs(batched["fc1_voc12_c0/weights"]).max() > 0


def test_train_msc_flags_and_update_counting(tmp_path):
    parser = train_flags.build_parser(training.TRAIN_MSC)
    defaults = parser.parse_args([])
    assert (defaults.batch_size, defaults.save_num_images, defaults.grad_update_every,
            defaults.scales, defaults.num_steps) == (1, 1, 10, SCALES, 20001)
    for recipe in (training.TRAIN, training.FINE_TUNE):  # Caffe's iter_size 1
        assert train_flags.build_parser(recipe).parse_args([]).grad_update_every == 1
    data = shapes.make_shapes_dataset(tmp_path / "data", num_train=6, num_val=1, seed=4)
    snapshots = tmp_path / "snap"
    # The XLA-compiled step (the plain one is tested above), multi-scale with two scales:
    # every op of the recipe's three (each further scale adds the same ones again, and
    # ~15 s of CPU time to XLA's compilation).
    config = training.TRAIN_MSC.config(
        variant="tiny", num_classes=4, data_dir=data["root"], data_list=data["train"],
        input_size=(48, 48), grad_update_every=3, num_steps=2, snapshot_dir=str(snapshots),
        random_scale=True, jit=True, scales=(1.0, 0.5))
    result = training.train(config, "train_msc")
    assert result.updates == 2 and result.checkpoint.endswith("model.ckpt-2")
    reader = tf.train.load_checkpoint(result.checkpoint)
    # Two updates, each from 3 mini-batches of 1 image.
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert reader.get_tensor("data_position/.ATTRIBUTES/VARIABLE_VALUE") == 6
