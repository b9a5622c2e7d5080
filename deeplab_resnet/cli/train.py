"""Train DeepLab-v2 ResNet on a segmentation list (Caffe SGD, poly learning rate).

Rerunning the same command resumes from the latest checkpoint in --snapshot-dir.
"""

from deeplab_resnet import cli


def main(argv=None):
    from deeplab_resnet import training  # after cli.run has quieted TensorFlow's start-up
    return training.main(training.TRAIN, argv, description=__doc__)


def entry():
    """The `deeplab-train` command."""
    cli.run(main)
