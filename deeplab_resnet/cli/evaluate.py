"""Evaluate a DeepLab-ResNet on a labelled list: per-class IoU and mean IoU.

    python evaluate.py --data-dir DIR --data-list LIST --restore-from CKPT
        [--model M] [--num-classes N] [--ignore-label 255] [--num-steps N]
        [--scales 1.0,0.75,0.5] [--flip] [--deeplab-protocol] [--crf]
        [--save-dir DIR] [--json-output FILE]

Each image is predicted at full resolution, one at a time (any size), the
logits resized bilinearly to the image, argmax; one confusion matrix is counted
over the pixels whose label is not --ignore-label. The last line printed is
`Mean IoU: 0.xxxx`.
"""

import dataclasses
import json
import os

from deeplab_resnet import cli
from deeplab_resnet.cli import predict_flags


def get_arguments(argv=None):
    parser = cli.ArgumentParser(
        description="DeepLab-ResNet evaluation: confusion matrix, per-class IoU, mean IoU.")
    cli.add_data_args(parser)
    parser.add_argument("--restore-from", required=True,
                        help="checkpoint prefix, folder of checkpoints, or .caffemodel")
    cli.add_model_args(parser)
    parser.add_argument("--num-steps", type=cli.positive_int, default=None,
                        help="evaluate only the first N images of the list (default: all)")
    parser.add_argument("--save-dir", default=None,
                        help="also write the predicted labels as <stem>.png (palette PNG, "
                             "pixel value = class index) into this folder")
    parser.add_argument("--class-names", type=lambda text: [n.strip() for n in text.split(",")],
                        default=None,
                        help="comma-separated class names for the report (default: VOC's for "
                             "21 classes, else class_0, class_1, ...)")
    parser.add_argument("--json-output", default=None,
                        help="also write every score, the confusion matrix and the settings "
                             "as JSON to this file")
    predict_flags.add_prediction_args(parser)
    args = parser.parse_args(argv)
    if args.data_list is None:
        parser.error("--data-list is required")
    return args


def main(argv=None):
    args = get_arguments(argv)
    # The library (and TensorFlow) after the flags: --help stays fast.
    from deeplab_resnet import checkpoint, evaluation, metrics, utils
    images, labels = utils.read_list(args.data_dir, args.data_list)
    pairs = list(zip(images, labels))[:args.num_steps]
    crf = predict_flags.crf_params(args)
    if args.save_dir is not None:
        cli.check_writable_dir(args.save_dir, "--save-dir")
    if args.json_output is not None:
        cli.check_writable_dir(os.path.dirname(os.path.abspath(args.json_output)),
                               "--json-output")
    model = checkpoint.load_weights(args.restore_from, args.model, args.num_classes,
                                    prototxt=args.prototxt)
    names = utils.class_names(model.num_classes, args.class_names)  # checked before the work
    predictor = predict_flags.predictor(model, args, crf)
    confusion = evaluation.evaluate(predictor, pairs, model.num_classes, args.ignore_label,
                                    args.save_dir)
    result = metrics.scores(confusion, names)
    if args.json_output is not None:
        settings = {"restore_from": args.restore_from, "model": model.variant,
                    "num_classes": model.num_classes, "ignore_label": args.ignore_label,
                    "images": len(pairs), "scales": list(args.scales), "flip": args.flip,
                    "deeplab_protocol": args.deeplab_protocol,
                    "pad_size": args.pad_size if args.deeplab_protocol else None,
                    "crf": dataclasses.asdict(crf) if crf is not None else None}
        document = dict(result, settings=settings, confusion_matrix=confusion.tolist())
        with utils.atomic_path(args.json_output) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(document, f, indent=2)
    print(evaluation.report(result))
    return 0


def entry():
    """The `deeplab-evaluate` command."""
    cli.run(main)
