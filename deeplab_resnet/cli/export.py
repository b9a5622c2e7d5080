"""Export a DeepLab-ResNet checkpoint as a TensorFlow SavedModel for serving.

    python export.py --restore-from CKPT --output-dir DIR [--model M] [--num-classes N]
        [--classes FILE] [--dataset D]
        [--scales 1.0,0.75,0.5] [--flip] [--deeplab-protocol] [--precision fp32|bf16|fp16]

The `serving_default` signature takes `image`: a uint8 RGB tensor [H, W, 3] of
any size, and returns `labels` (int32 [H, W], class indices) and
`probabilities` (float32 [H, W, num_classes]) at the image's resolution,
computed exactly as inference.py computes them (dense CRF excepted: it is not
a TensorFlow op). The `classes` signature (no inputs) returns the class names
(`class_names`, string [C]) and colours (`class_colours`, uint8 [C, 3]): those of
--classes, else those the checkpoint records, else --dataset's. With
--precision bf16 or fp16 the saved network computes in that precision (the
signature is unchanged). The SavedModel is written to a temporary folder
beside --output-dir and renamed into place, so a failed export leaves nothing.
"""


from deeplab_resnet import cli
from deeplab_resnet.cli import predict_flags


def get_arguments(argv=None):
    parser = cli.ArgumentParser(
        description="Export a DeepLab-ResNet checkpoint as a SavedModel (uint8 image in, "
                    "class-index map and probabilities out).")
    parser.add_argument("--restore-from", required=True,
                        help=cli.WEIGHTS_HELP)
    parser.add_argument("--output-dir", required=True,
                        help="SavedModel folder to create (must not exist, or be empty)")
    cli.add_model_args(parser)
    predict_flags.add_dataset_arg(parser)
    predict_flags.add_prediction_args(parser, with_crf=False)
    return parser.parse_args(argv)


@cli.flag_errors
def main(argv=None):
    args = get_arguments(argv)
    cli.use_devices(args)
    from deeplab_resnet.predict import export
    output_dir = export.check_output_dir(args.output_dir)  # before the weights are read
    segmenter = predict_flags.load_segmenter(args, args.restore_from, dataset=args.dataset)
    export.export(segmenter.predictor, output_dir, segmenter.class_names, segmenter.palette)
    print(f"SavedModel written to {output_dir} (signature serving_default: image uint8 "
          f"[H, W, 3] -> labels int32 [H, W], probabilities float32 [H, W, "
          f"{segmenter.num_classes}])")
    return 0


def entry():
    """The `deeplab-export` command."""
    cli.run_and_exit(main)
