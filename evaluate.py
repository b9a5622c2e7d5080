"""The `deeplab-evaluate` command (deeplab_resnet/cli/evaluate.py); see --help."""
from deeplab_resnet.cli.evaluate import entry

if __name__ == "__main__":
    entry()
