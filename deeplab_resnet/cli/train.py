"""Train DeepLab-v2 ResNet on a segmentation list (Caffe SGD, poly learning rate).

Rerunning the same command resumes from the latest checkpoint in --snapshot-dir.
"""

from deeplab_resnet import cli


def main(argv=None):
    # The library (and TensorFlow) after cli.run has quieted TensorFlow's start-up.
    from deeplab_resnet.cli import train_flags
    from deeplab_resnet.training import TRAIN
    return train_flags.main(TRAIN, argv, description=__doc__)


def entry():
    """The `deeplab-train` command."""
    cli.run_and_exit(main)
