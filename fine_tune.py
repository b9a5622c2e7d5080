"""Fine-tune only the head (fc1_voc12_*) of DeepLab-v2 ResNet with Adam.

Rerunning the same command resumes from the latest checkpoint in --snapshot-dir.
"""

from deeplab_resnet import cli, training


def main(argv=None):
    return training.main(training.FINE_TUNE, argv, description=__doc__)


if __name__ == "__main__":
    cli.run(main)
