"""Fine-tune only the head (fc1_voc12_*) of DeepLab-v2 ResNet with Adam.

Rerunning the same command resumes from the latest checkpoint in --snapshot-dir.
"""

from deeplab_resnet import cli


def main(argv=None):
    from deeplab_resnet import training  # after cli.run has quieted TensorFlow's start-up
    return training.main(training.FINE_TUNE, argv, description=__doc__)


def entry():
    """The `deeplab-fine-tune` command."""
    cli.run(main)
