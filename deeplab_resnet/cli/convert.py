"""Converts a Caffe net (prototxt + caffemodel) to a TF checkpoint, an .npz and/or TF2 code,
or rewrites a checkpoint (e.g. the 2017 TF port's) in this project's format.

Examples:
    python convert.py misc/deploy.prototxt --caffemodel train_iter_20000.caffemodel \\
        --ckpt-path ckpt/deeplab_resnet
    python convert.py deploy.prototxt --caffemodel model.caffemodel \\
        --data-output-path weights.npz --code-output-path net.py
    python convert.py deeplab_resnet.ckpt --ckpt-path ckpt/deeplab_resnet  # the 2017 port's
"""

import argparse
import os

from deeplab_resnet import cli
from deeplab_resnet.errors import DeepLabError

# Sources read as weights, not as a prototxt: the 2017 port's V1 files end in .ckpt.
_WEIGHTS_SUFFIXES = (".ckpt", ".index", ".npz", ".npy")


def is_weights_source(path):
    """A checkpoint prefix, folder of checkpoints, V1 .ckpt file or .npz (not a prototxt)."""
    return (os.path.isdir(path) or os.path.exists(path + ".index")
            or path.endswith(_WEIGHTS_SUFFIXES))


def rewrite(args):
    """SOURCE is a checkpoint: write it in this project's format."""
    from deeplab_resnet.weights import checkpoint
    if args.caffemodel or args.code_output_path:
        raise DeepLabError(f"{args.def_path} is a checkpoint, not a prototxt: --caffemodel and "
                        "--code-output-path need the net's deploy prototxt")
    if not (args.ckpt_path or args.data_output_path):
        raise DeepLabError("nothing to do: give --ckpt-path or --data-output-path")
    variant, num_classes, count = checkpoint.rewrite(args.def_path, args.ckpt_path,
                                                     args.data_output_path, args.class_names,
                                                     classes=args.classes)
    what = (f"DeepLab {variant}, {num_classes} classes" if variant else
            "no DeepLab head: variant and class count not recorded")
    read = checkpoint.source_path(args.def_path)
    for path in (args.ckpt_path, args.data_output_path):
        if path:
            print(f"{read} -> {path} ({count} tensors; {what})")


def convert_caffe(args):
    from deeplab_resnet.weights.conversion import convert
    done = convert(args.def_path, args.caffemodel, ckpt_path=args.ckpt_path,
                   npz_path=args.data_output_path, code_path=args.code_output_path,
                   class_names=args.class_names, classes=args.classes)
    what = (f"DeepLab {done.variant}, {done.num_classes} classes" if done.variant
            else "not a DeepLab net: no variant or class count recorded")
    if done.ckpt_path:
        print(f"checkpoint {done.ckpt_path} ({done.num_tensors} tensors; {what})")
    if done.npz_path:
        print(f"weights {done.npz_path} ({done.num_tensors} tensors, .npz)")
    if done.code_path:
        print(f"TF2 code {done.code_path}")


@cli.flag_errors
def main(argv=None):
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("def_path", metavar="SOURCE",
                        help="deploy .prototxt of the net (with --caffemodel); or a checkpoint to "
                             "rewrite: the 2017 port's deeplab_resnet.ckpt (V1) or model.ckpt-N "
                             "(V2), a folder of checkpoints, an .npz")
    parser.add_argument("--caffemodel", default=None, help="binary .caffemodel with the weights")
    parser.add_argument("--ckpt-path", default=None,
                        help="checkpoint prefix to write (a TensorFlow checkpoint)")
    parser.add_argument("--data-output-path", default=None,
                        help=".npz file to write with the converted weights")
    parser.add_argument("--code-output-path", default=None,
                        help=".py file to write with TF2 code of the net")
    parser.add_argument("--class-names", type=cli.class_names, default=None,
                        help="comma-separated names of the classes, in class order, recorded "
                             "in the checkpoint: evaluation and inference show them "
                             "(default: none recorded, or the source checkpoint's)")
    cli.add_classes_arg(parser, help="classes file (one 'R G B name' line per class, in class "
                                     "order): names and colours recorded in the checkpoint; "
                                     "masks and overlays are drawn in its colours")
    parser.add_argument("-p", "--phase", choices=["test"], default="test",
                        help="accepted for the 2017 port's commands: the deploy (test) phase is "
                             "the one converted (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.data_output_path and not args.data_output_path.endswith(".npz"):
        raise DeepLabError(f"--data-output-path {args.data_output_path}: the weights are "
                           "written as an .npz of plain arrays (no pickle): name the file "
                           "*.npz (for a checkpoint, the 2017 port's npy2ckpt.py step, use "
                           "--ckpt-path)")
    if args.def_path.endswith(".caffemodel"):
        raise DeepLabError(f"{args.def_path} is a caffemodel: give the deploy prototxt first, e.g. "
                        f"convert.py misc/deploy.prototxt --caffemodel {args.def_path} "
                        "--ckpt-path PREFIX (or use the caffemodel directly as --restore-from)")
    if is_weights_source(args.def_path):
        rewrite(args)
    else:
        convert_caffe(args)
    return 0


def entry():
    """The `deeplab-convert` command."""
    cli.run_and_exit(main)
