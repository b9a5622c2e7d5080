"""Export a DeepLab-ResNet checkpoint as a TensorFlow SavedModel for serving.

    python export.py --restore-from CKPT --output-dir DIR [--model M] [--num-classes N]
        [--scales 1.0,0.75,0.5] [--flip] [--deeplab-protocol] [--precision fp32|bf16|fp16]

The `serving_default` signature takes `image`: a uint8 RGB tensor [H, W, 3] of
any size, and returns `labels` (int32 [H, W], class indices) and
`probabilities` (float32 [H, W, num_classes]) at the image's resolution,
computed exactly as inference.py computes them (dense CRF excepted: it is not
a TensorFlow op). With --precision bf16 or fp16 the saved network computes in
that precision (the signature is unchanged). The SavedModel is written to a
temporary folder beside --output-dir and renamed into place, so a failed
export leaves nothing.
"""

import os
import shutil
import tempfile

from deeplab_resnet.tf_quiet import tf

from deeplab_resnet import checkpoint, cli, predict, utils
from deeplab_resnet.errors import UserError


def get_arguments(argv=None):
    parser = cli.ArgumentParser(
        description="Export a DeepLab-ResNet checkpoint as a SavedModel (uint8 image in, "
                    "class-index map and probabilities out).")
    parser.add_argument("--restore-from", required=True,
                        help=cli.WEIGHTS_HELP)
    parser.add_argument("--output-dir", required=True,
                        help="SavedModel folder to create (must not exist, or be empty)")
    cli.add_model_args(parser)
    predict.add_prediction_args(parser, crf=False)
    return parser.parse_args(argv)


def check_output_dir(path):
    """The absolute output path; an error if it exists with content or its parent is not writable."""
    path = os.path.abspath(path)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise UserError(f"--output-dir {path}: already exists and is not an empty folder")
    cli.check_writable_dir(os.path.dirname(path), "--output-dir")
    return path


def export(predictor, output_dir):
    """Saves `predictor` as a SavedModel at `output_dir`, atomically.

    Args:
        predictor: a `predict.Predictor`; its `serve` is the serving signature.
        output_dir: absolute path of the folder to create.
    """
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=os.path.dirname(output_dir))
    try:
        utils.plain_mode(tmp)
        with checkpoint.writing(output_dir):
            tf.saved_model.save(predictor, tmp, signatures={
                "serving_default": predictor.serve.get_concrete_function()})
        if os.path.isdir(output_dir):
            # An empty folder left by the user: rename() replaces it only when it is empty.
            os.rmdir(output_dir)
        os.replace(tmp, output_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def main(argv=None):
    args = get_arguments(argv)
    output_dir = check_output_dir(args.output_dir)
    model = checkpoint.load_weights(args.restore_from, args.model, args.num_classes,
                                    prototxt=args.prototxt)
    export(predict.predictor_from_args(model, args), output_dir)
    print(f"SavedModel written to {output_dir} (signature serving_default: image uint8 "
          f"[H, W, 3] -> labels int32 [H, W], probabilities float32 [H, W, {model.num_classes}])")
    return 0


if __name__ == "__main__":
    cli.run(main)
