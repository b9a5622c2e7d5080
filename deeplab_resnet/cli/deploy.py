"""Writes the Caffe deploy prototxt of a DeepLab variant (`caffe.deploy_prototxt`).

Regenerate the committed files with
    deeplab-deploy --model resnet101 --num-classes 21 --output misc/deploy.prototxt
(or `python -m deeplab_resnet.cli.deploy ...`).
"""

from deeplab_resnet.files import atomic_path
from deeplab_resnet import cli, defaults
from deeplab_resnet.model.arch import VARIANTS


def build_parser():
    """The flags of `deeplab-deploy` (built without running it, e.g. for --help)."""
    parser = cli.ArgumentParser(
        description="Writes the Caffe deploy prototxt of a DeepLab variant: the network "
                    "convert.py reads a .caffemodel with, and Caffe runs.")
    parser.add_argument("--model", choices=sorted(VARIANTS), default=defaults.VARIANT,
                        help="network variant (default: %(default)s)")
    parser.add_argument("--num-classes", type=cli.positive_int, default=defaults.NUM_CLASSES,
                        help="output channels of the head, one per class (default: %(default)s)")
    parser.add_argument("--input-size", type=cli.positive_int, default=defaults.INPUT_SIZE,
                        help="height and width written as the input's input_dim; Caffe "
                             "reshapes the net to any image size (default: %(default)s)")
    parser.add_argument("--output", required=True,
                        help="prototxt file to write (replaced if it exists)")
    return parser


@cli.flag_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    from deeplab_resnet.weights import caffe
    text = caffe.deploy_prototxt(args.model, args.num_classes, args.input_size)
    with atomic_path(args.output) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    print(f"{args.output}: deploy prototxt of DeepLab {args.model}, {args.num_classes} classes, "
          f"input 1x3x{args.input_size}x{args.input_size}")
    return 0


def entry():
    """The `deeplab-deploy` command."""
    cli.run_and_exit(main)


if __name__ == "__main__":
    entry()
