"""Train DeepLab-v2 ResNet on a segmentation list (Caffe SGD, poly learning rate).

Rerunning the same command resumes from the latest checkpoint in --snapshot-dir.
"""

from deeplab_resnet import cli, training


def main(argv=None):
    return training.main(training.TRAIN, argv, description=__doc__)


if __name__ == "__main__":
    cli.run(main)
