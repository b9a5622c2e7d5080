"""The `deeplab-fine-tune` command (deeplab_resnet/cli/fine_tune.py); see --help."""
from deeplab_resnet.cli.fine_tune import entry

if __name__ == "__main__":
    entry()
