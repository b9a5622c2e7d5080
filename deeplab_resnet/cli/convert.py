"""Converts a Caffe net (prototxt + caffemodel) to a TF checkpoint, an .npz and/or TF2 code.

Examples:
    python convert.py misc/deploy.prototxt --caffemodel train_iter_20000.caffemodel \\
        --ckpt-path ckpt/deeplab_resnet
    python convert.py deploy.prototxt --caffemodel model.caffemodel \\
        --data-output-path weights.npz --code-output-path net.py
"""

import argparse

from deeplab_resnet import cli


def main(argv=None):
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("def_path", help="deploy .prototxt of the net")
    parser.add_argument("--caffemodel", default=None, help="binary .caffemodel with the weights")
    parser.add_argument("--ckpt-path", default=None,
                        help="checkpoint prefix to write (deeplab_resnet.checkpoint format)")
    parser.add_argument("--data-output-path", default=None,
                        help=".npz file to write with the converted weights")
    parser.add_argument("--code-output-path", default=None,
                        help=".py file to write with TF2 code of the net")
    args = parser.parse_args(argv)
    from deeplab_resnet.conversion import convert  # after the flags: --help stays fast
    convert(args.def_path, caffemodel=args.caffemodel, ckpt_path=args.ckpt_path,
            data_output_path=args.data_output_path, code_output_path=args.code_output_path)
    return 0


def entry():
    """The `deeplab-convert` command."""
    cli.run(main)
