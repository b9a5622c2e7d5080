"""The `deeplab-inference` command (deeplab_resnet/cli/inference.py); see --help."""
from deeplab_resnet.cli.inference import entry

if __name__ == "__main__":
    entry()
