"""Multi-scale training of DeepLab-v2 ResNet (scales 1, 0.75, 0.5 fused by max).

Loss = CE(fused) + CE at every scale; gradients are accumulated over
--grad-update-every mini-batches per update (Caffe's iter_size). Rerunning the
same command resumes from the latest checkpoint in --snapshot-dir.
"""

from deeplab_resnet import cli, training


def main(argv=None):
    return training.main(training.TRAIN_MSC, argv, description=__doc__)


if __name__ == "__main__":
    cli.run(main)
