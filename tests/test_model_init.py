"""Models built from loaded values: no random draws for what a file gives, the same seeded
draws for what it does not (a new head), and training resumed without random draws."""

import numpy as np
import pytest
from conftest import save_model, tiny_model

from deeplab_resnet.files import save_npz
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.model.arch import is_head_variable
from deeplab_resnet.model.network import DeepLabResNet, initial_parameter_values
from deeplab_resnet.training import TrainConfig, build_model

NUM_CLASSES = 3


def _values(model):
    return {name: var.numpy() for name, var in model.params.items()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(weights of a tiny model with non-trivial BatchNorm statistics, checkpoint prefix,
    .npz path)."""
    model = tiny_model(NUM_CLASSES, seed=3, head_biases=[-0.2, 0.1, 0.3])
    rng = np.random.default_rng(1)
    for name, var in model.params.items():
        if name.endswith(("/mean", "/offset", "/variance", "/scale")):
            var.assign(rng.uniform(0.5, 1.5, var.shape).astype(np.float32))
    folder = tmp_path_factory.mktemp("init")
    prefix = save_model(model, folder / "tiny")
    npz = str(folder / "tiny.npz")
    save_npz(_values(model), npz)
    return _values(model), prefix, npz


@pytest.fixture
def no_random_draws(monkeypatch):
    """Any numpy generator made while the test runs fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("random initial values were drawn")
    monkeypatch.setattr(np.random, "default_rng", refuse)


@pytest.mark.parametrize("which", ["checkpoint", "npz"])
def test_loading_draws_no_random_values_and_keeps_every_value(saved, which, no_random_draws):
    values, prefix, npz = saved
    model = checkpoint.load_weights(prefix if which == "checkpoint" else npz)
    loaded = _values(model)
    assert list(loaded) == list(values)
    for name, value in values.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_new_head_is_the_seeded_head_of_a_new_network(saved):
    values, prefix, _ = saved
    model = checkpoint.load_weights(prefix, num_classes=5, new_head=True, seed=4)
    fresh = _values(DeepLabResNet("tiny", 5, seed=4))
    other_seed = checkpoint.load_weights(prefix, num_classes=5, new_head=True, seed=5)
    for name, value in _values(model).items():
        expected = fresh[name] if is_head_variable(name) else values[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)
    head = [n for n in fresh if is_head_variable(n) and n.endswith("/weights")]
    assert head and all(np.std(fresh[n]) > 0 for n in head)
    assert not any(np.array_equal(other_seed.params[n].numpy(), fresh[n]) for n in head)


def test_initial_values_of_another_shape_are_refused():
    arch = DeepLabResNet("tiny", NUM_CLASSES).arch
    name = arch.stem.weights
    with pytest.raises(ValueError, match="conv1/weights"):
        initial_parameter_values(arch, given={name: np.zeros((1, 1, 3, 2), np.float32)})


def test_resumed_training_builds_its_model_without_random_draws(saved, no_random_draws):
    _, prefix, _ = saved
    config = TrainConfig(variant="tiny", num_classes=NUM_CLASSES, random_seed=7)
    model = build_model(config, prefix)
    assert (model.variant, model.num_classes) == ("tiny", NUM_CLASSES)
    # Zeros, which the restore of the snapshot overwrites (tests/test_training.py -k resume).
    assert all(not np.any(var.numpy()) for var in model.params.values())
