"""Fine-tune only the head (fc1_voc12_*) of DeepLab-v2 ResNet with Adam.

Rerunning the same command resumes from the latest checkpoint in --snapshot-dir.
"""

from deeplab_resnet import cli


def main(argv=None):
    # The library (and TensorFlow) after cli.run has quieted TensorFlow's start-up.
    from deeplab_resnet.cli import train_flags
    from deeplab_resnet.training import FINE_TUNE
    return train_flags.main(FINE_TUNE, argv, description=__doc__)


def entry():
    """The `deeplab-fine-tune` command."""
    cli.run_and_exit(main)
