"""Multi-scale training of DeepLab-v2 ResNet (scales 1, 0.75, 0.5 fused by max).

Loss = CE(fused) + CE at every scale; gradients are accumulated over
--grad-update-every mini-batches per update (Caffe's iter_size). Rerunning the
same command resumes from the latest checkpoint in --snapshot-dir.
"""

from deeplab_resnet import cli


def main(argv=None):
    # The library (and TensorFlow) after cli.run has quieted TensorFlow's start-up.
    from deeplab_resnet.cli import train_flags
    from deeplab_resnet.training import TRAIN_MSC
    return train_flags.main(TRAIN_MSC, argv, description=__doc__)


def entry():
    """The `deeplab-train-msc` command."""
    cli.run_and_exit(main)
