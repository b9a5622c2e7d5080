"""Multi-scale training of DeepLab-v2 ResNet (scales 1, 0.75, 0.5 fused by max).

Loss = CE(fused) + CE at every scale; gradients are accumulated over
--grad-update-every mini-batches per update (Caffe's iter_size). Rerunning the
same command resumes from the latest checkpoint in --snapshot-dir.
"""

from deeplab_resnet import cli


def main(argv=None):
    from deeplab_resnet import training  # after cli.run has quieted TensorFlow's start-up
    return training.main(training.TRAIN_MSC, argv, description=__doc__)


def entry():
    """The `deeplab-train-msc` command."""
    cli.run(main)
