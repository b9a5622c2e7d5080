"""--precision on CPU: bfloat16 and float16 forward passes, bfloat16 training,
float16 dynamic loss scaling (overflow skips the update, the scale halves and grows)."""

import numpy as np
import pytest

from deeplab_resnet import training
from deeplab_resnet.data import shapes
from deeplab_resnet.errors import SettingError
from deeplab_resnet.runtime import precision as precision_lib
from deeplab_resnet.cli import train_flags
from deeplab_resnet.training import losses, optim, state, step
from deeplab_resnet.model.network import DeepLabResNet
import tensorflow as tf

NUM_CLASSES = 3


def batch(seed=0, n=2, size=41):
    """Random crops and labels that depend on the image (so there is something to learn)."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 40, (n, size, size, 3)).astype(np.float32)
    labels = np.digitize(images.mean(-1), [-15.0, 15.0]).astype(np.int32)
    return images, labels


@pytest.mark.parametrize("dtype, tolerance", [(tf.bfloat16, 0.05), (tf.float16, 0.01)])
def test_low_precision_forward_is_close_to_float32(dtype, tolerance):
    """CPU TensorFlow runs the tiny network in both dtypes; weights stay float32."""
    model = DeepLabResNet("tiny", NUM_CLASSES, seed=1)
    images, _ = batch()
    reference = model(tf.constant(images)).numpy()
    logits = model(tf.cast(images, dtype))
    assert logits.dtype == dtype
    assert all(v.dtype == tf.float32 for v in model.params.values())
    error = np.abs(logits.numpy().astype(np.float32) - reference).max()
    assert error <= tolerance * np.abs(reference).max()


def make_trainer(dtype, loss_scale=None, train_bn=False):
    model = DeepLabResNet("tiny", NUM_CLASSES, seed=2, train_bn=train_bn, bn_momentum=0.9)
    params = optim.sgd_params(model)
    optimizer = optim.CaffeSGD(params, momentum=0.9, weight_decay=5e-4)
    objective = losses.Objective(model, 255, compute_dtype=dtype)
    trainer = step.Trainer(objective, optimizer, {k: p[0] for k, p in params.items()},
                               loss_scale=loss_scale)
    return model, trainer


def test_bf16_training_reduces_the_loss():
    _, trainer = make_trainer(tf.bfloat16, train_bn=True)
    images, labels = batch(seed=3, n=4)
    losses = []
    for _ in range(8):
        loss, _, ok, *_ = trainer.step(images[None], labels[None], 0.001).read()
        assert ok and np.isfinite(loss)
        losses.append(loss)
    assert losses[-1] < 0.7 * losses[0], losses


def test_loss_scale_halves_on_overflow_and_grows_after_good_steps():
    scale = step.LossScale(initial=8.0, growth_interval=3)
    scale.update(tf.constant(False))
    assert float(scale.scale) == 4.0 and int(scale.good_steps) == 0
    for expected_good in (1, 2):
        scale.update(tf.constant(True))
        assert float(scale.scale) == 4.0 and int(scale.good_steps) == expected_good
    scale.update(tf.constant(True))
    assert float(scale.scale) == 8.0 and int(scale.good_steps) == 0
    scale.update(tf.constant(True))
    scale.update(tf.constant(False))  # an overflow resets the count of good steps
    assert float(scale.scale) == 4.0 and int(scale.good_steps) == 0


def test_loss_scale_never_falls_below_one():
    scale = step.LossScale(initial=2.0, growth_interval=3)
    for _ in range(3):
        scale.update(tf.constant(False))
    assert float(scale.scale) == 1.0


FP16_CPU = precision_lib.Hardware(frozenset({"avx512_fp16"}))


def shapes_config(tmp_path, **settings):
    data = shapes.make_shapes_dataset(tmp_path / "data", num_train=4, num_val=1, seed=6)
    return training.TrainConfig(**{
        "data_dir": data["root"], "data_list": data["train"], "variant": "tiny",
        "num_classes": len(shapes.CLASSES), "batch_size": 1, "input_size": (33, 33),
        "num_steps": 8, "learning_rate": 1e-4, "save_num_images": 0,
        "snapshot_dir": str(tmp_path / "snap"), **settings})


def test_updates_skipped_in_a_row_stop_the_run(tmp_path, monkeypatch):
    """fp16 (on a CPU said to have it) whose loss scale overflows every update: after
    max_skipped_updates skipped in a row, the run stops with one message; nothing saved."""
    monkeypatch.setattr(precision_lib, "detect", lambda: FP16_CPU)
    monkeypatch.setattr(state, "LossScale",
                        lambda: step.LossScale(initial=2.0 ** 100))
    config = shapes_config(tmp_path, precision="fp16", max_skipped_updates=3, log_every=2,
                           save_pred_every=100)
    with pytest.raises(SettingError, match="skipped 3 updates in a row") as error:
        training.train(config, "train")
    message = str(error.value)
    assert "to update 3," in message and "last checkpoint: none" in message
    assert "\n" not in message and error.value.field == "precision"


def test_fp16_overflow_skips_the_update_without_stopping():
    loss_scale = step.LossScale(initial=2.0 ** 100, growth_interval=2)
    model, trainer = make_trainer(tf.float16, loss_scale, train_bn=True)
    images, labels = batch(seed=4)
    # (BatchNorm's moving statistics follow every forward pass, as in any framework.)
    before = {k: v.numpy() for k, v in zip(trainer.names, trainer.variables)}
    loss, _, ok, _, skipped = trainer.step(images[None], labels[None], 0.001).read()
    assert ok and np.isfinite(loss) and skipped  # the loss is float32 and finite: training goes on
    assert float(loss_scale.scale) == 2.0 ** 99
    for key, value in before.items():
        np.testing.assert_array_equal(model.params[key].numpy(), value, err_msg=key)

    loss_scale.scale.assign(2.0 ** 8)
    for _ in range(2):
        loss, _, ok, _, skipped = trainer.step(images[None], labels[None], 0.001).read()
        assert ok and np.isfinite(loss) and not skipped
    assert float(loss_scale.scale) == 2.0 ** 9  # grown after 2 good steps
    assert not np.array_equal(model.params["fc1_voc12_c0/weights"].numpy(),
                              before["fc1_voc12_c0/weights"])


def test_fp16_gradients_match_float32_after_unscaling():
    """The unscaled float16 update is close to the float32 one."""
    images, labels = batch(seed=5)
    deltas = []
    for dtype, loss_scale in ((tf.float32, None), (tf.float16, step.LossScale(2.0 ** 8))):
        model, trainer = make_trainer(dtype, loss_scale)
        before = model.params["fc1_voc12_c1/weights"].numpy()
        _, _, ok, *_ = trainer.step(images[None], labels[None], 1e-6).read()
        assert ok
        deltas.append(model.params["fc1_voc12_c1/weights"].numpy() - before)
    reference, half = deltas
    assert np.abs(half - reference).max() <= 0.02 * np.abs(reference).max()


@pytest.mark.parametrize("recipe, precision", [(training.TRAIN, "fp16"),
                                               (training.TRAIN_MSC, "bf16")])
def test_training_scripts_run_in_mixed_precision(tmp_path, recipe, precision,
                                                  process_state_restored):
    data = shapes.make_shapes_dataset(tmp_path / "data", num_train=4, num_val=1, seed=6)
    snapshots = tmp_path / "snap"
    args = ["--model", "tiny", "--num-classes", str(len(shapes.CLASSES)),
            "--data-dir", data["root"], "--data-list", data["train"], "--input-size", "40,40",
            "--batch-size", "2", "--num-steps", "2", "--learning-rate", "1e-4",
            "--snapshot-dir", str(snapshots), "--precision", precision]
    if recipe.multi_scale:
        args += ["--grad-update-every", "2"]
    assert train_flags.main(recipe, args) == 0
    saved = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(snapshots)))
    assert saved.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 2
    names = saved.get_variable_to_shape_map()
    # Loss scaling follows the precision that runs (fp16 falls back to fp32 on a CPU without
    # AVX512-FP16, as this one), not the one asked for.
    runs_fp16 = precision == "fp16" and precision_lib.detect().supports("fp16")
    assert any(k.startswith("loss_scale/") for k in names) == runs_fp16
    weights = [k for k in names if k.startswith("params/") and "weights" in k]
    assert weights and all(saved.get_tensor(k).dtype == np.float32 for k in weights)
