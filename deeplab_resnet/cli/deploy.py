"""Writes the Caffe deploy prototxt of a DeepLab variant (`caffe.deploy_prototxt`).

Regenerate the committed files with
    deeplab-deploy --model resnet101 --num-classes 21 --output misc/deploy.prototxt
(or `python -m deeplab_resnet.cli.deploy ...`).
"""

from deeplab_resnet import cli, defaults
from deeplab_resnet.arch import VARIANTS
from deeplab_resnet.errors import DeepLabError


@cli.flag_errors
def main(argv=None):
    parser = cli.ArgumentParser(
        description="Writes the Caffe deploy prototxt of a DeepLab variant.")
    parser.add_argument("--model", choices=sorted(VARIANTS), default=defaults.VARIANT)
    parser.add_argument("--num-classes", type=int, default=defaults.NUM_CLASSES)
    parser.add_argument("--input-size", type=int, default=defaults.INPUT_SIZE)
    parser.add_argument("--output", required=True, help="prototxt file to write")
    args = parser.parse_args(argv)
    if args.num_classes < 1 or args.input_size < 1:
        raise DeepLabError("--num-classes and --input-size must be positive")
    from deeplab_resnet import caffe, utils
    text = caffe.deploy_prototxt(args.model, args.num_classes, args.input_size)
    with utils.atomic_path(args.output) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return 0


def entry():
    """The `deeplab-deploy` command."""
    cli.run(main)


if __name__ == "__main__":
    entry()
