"""The `deeplab-train` command (deeplab_resnet/cli/train.py); see --help."""
from deeplab_resnet.cli.train import entry

if __name__ == "__main__":
    entry()
