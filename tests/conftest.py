"""Shared test fixtures: paths, the shared Caffe prototxt fixtures, small models."""

import os
import pathlib
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def shared_fixture(name):
    """Path of a file in ../shared/fixtures, or skip the test when it is absent."""
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def tiny_model(num_classes, seed=0, head_biases=None):
    """A `tiny` DeepLabResNet; `head_biases` (one per class) breaks ties between classes."""
    import numpy as np

    from deeplab_resnet.model import DeepLabResNet
    net = DeepLabResNet("tiny", num_classes, seed=seed)
    if head_biases is not None:
        for name, var in net.params.items():
            if name.endswith("/biases"):
                var.assign(np.asarray(head_biases, np.float32))
    return net


@pytest.fixture
def deeplab_deploy_prototxt():
    return shared_fixture("deeplab_resnet101_deploy.prototxt")


@pytest.fixture
def resnet50_deploy_prototxt():
    return shared_fixture("resnet50_deploy.prototxt")


@pytest.fixture(scope="session")
def root():
    return ROOT
