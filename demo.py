"""The `deeplab-demo` command (deeplab_resnet/cli/demo.py): the offline end-to-end demo."""
from deeplab_resnet.cli.demo import entry

if __name__ == "__main__":
    entry()
