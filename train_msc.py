"""The `deeplab-train-msc` command (deeplab_resnet/cli/train_msc.py); see --help."""
from deeplab_resnet.cli.train_msc import entry

if __name__ == "__main__":
    entry()
