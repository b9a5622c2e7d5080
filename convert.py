"""The `deeplab-convert` command (deeplab_resnet/cli/convert.py); see --help."""
from deeplab_resnet.cli.convert import entry

if __name__ == "__main__":
    entry()
