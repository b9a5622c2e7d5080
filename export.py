"""The `deeplab-export` command (deeplab_resnet/cli/export.py); see --help."""
from deeplab_resnet.cli.export import entry

if __name__ == "__main__":
    entry()
