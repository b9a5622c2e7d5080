"""Evaluate a DeepLab-ResNet on a labelled list: per-class IoU and mean IoU.

    python evaluate.py --data-dir DIR --data-list LIST --restore-from CKPT
        [--model M] [--num-classes N] [--classes FILE] [--ignore-label 255] [--num-steps N]
        [--scales 1.0,0.75,0.5] [--flip] [--deeplab-protocol] [--crf]
        [--precision fp32|bf16|fp16] [--tile H,W [--tile-overlap F]] [--batch-size N]
        [--save-dir DIR] [--json-output FILE] [--voc-submission DIR] [--config FILE.toml]

--restore-from may also name a .tflite or .onnx file written by export.py (run by LiteRT
or onnxruntime). Each image is predicted at full resolution (any size; by tiles with
--tile; --batch-size consecutive images of one size together), the
logits resized bilinearly to the image, argmax; one confusion matrix is counted
over the pixels whose label is not --ignore-label. The last line printed is
`Mean IoU: 0.xxxx`.

A list without labels (a test set: lines with only an image path) is predicted
and written (--voc-submission DIR for the VOC test server, --save-dir), not scored.
"""

import dataclasses
import json
import os
import sys

from tqdm import tqdm

from deeplab_resnet.data.images import check_distinct_stems
from deeplab_resnet.data.lists import read_list
from deeplab_resnet.files import atomic_path
from deeplab_resnet.predict.voc_submission import voc_submission_folder
from deeplab_resnet import cli
from deeplab_resnet.cli import config_file, predict_flags, progress
from deeplab_resnet.errors import DeepLabError, counted


def get_arguments(argv=None):
    parser = cli.ArgumentParser(
        description="DeepLab-ResNet evaluation: confusion matrix, per-class IoU, mean IoU.")
    cli.add_data_args(parser)
    parser.add_argument("--restore-from", required=True,
                        help=cli.WEIGHTS_HELP)
    cli.add_model_args(parser)
    parser.add_argument("--num-steps", type=cli.positive_int, default=None,
                        help="evaluate only the first N images of the list (default: all)")
    parser.add_argument("--save-dir", default=None,
                        help="also write the predicted labels as <stem>.png (palette PNG, "
                             "pixel value = class index) into this folder")
    parser.add_argument("--voc-submission", metavar="DIR", default=None,
                        help="also write DIR/results/VOC2012/Segmentation/comp6_test_cls/"
                             "<stem>.png (palette PNGs of class indices), the layout the PASCAL "
                             "VOC test server takes; with a list of image paths only (the test "
                             "set), this is all it does")
    parser.add_argument("--class-names", type=cli.class_names, default=None,
                        help="comma-separated class names for the report (default: those the "
                             "weights record, else those of --dataset)")
    parser.add_argument("--json-output", default=None,
                        help="also write every score, the confusion matrix and the settings "
                             "as JSON to this file")
    predict_flags.add_dataset_arg(parser)
    predict_flags.add_prediction_args(parser)
    predict_flags.add_runtime_args(parser)
    config_file.add_config_arg(parser)
    args = config_file.parse_args(parser, argv)
    if args.data_list is None:
        parser.error("--data-list is required")
    return args


@cli.flag_errors
def main(argv=None):
    args = get_arguments(argv)
    cli.use_devices(args)
    # Output folders are made before the weights load (a bad one fails at once); a run that
    # fails before writing into them leaves none of them behind, empty.
    report_dir = (None if args.json_output is None
                  else os.path.dirname(os.path.abspath(args.json_output)))
    with cli.new_folders_removed_on_failure(args.save_dir, args.voc_submission, report_dir):
        return _evaluate(args)


def _evaluate(args):
    """Predicts, scores and reports the list `args` name; returns the exit status."""
    from deeplab_resnet.predict import evaluation
    images, labels = read_list(args.data_dir, args.data_list, with_labels=False)
    if not labels:
        if args.voc_submission is None and args.save_dir is None:
            raise DeepLabError(f"--data-list {args.data_list}: names no label files, so there is "
                               "nothing to score: add --voc-submission DIR (the VOC test "
                               "server's layout) or --save-dir DIR to write the predictions")
        if args.json_output is not None:
            raise DeepLabError(f"--json-output: --data-list {args.data_list} names no label "
                               "files, so there are no scores to write")
    pairs = list(zip(images, labels or [None] * len(images)))[:args.num_steps]
    if args.save_dir is not None or args.voc_submission is not None:
        check_distinct_stems([image for image, _ in pairs])
    crf = predict_flags.crf_params(args)
    if args.save_dir is not None:
        cli.check_writable_dir(args.save_dir, "--save-dir")
    if args.json_output is not None:
        cli.check_writable_dir(os.path.dirname(os.path.abspath(args.json_output)),
                               "--json-output")
    # Class names are checked against the model before the work.
    segmenter = predict_flags.load_segmenter(args, args.restore_from, crf, args.class_names,
                                               args.dataset)
    save_dirs = [] if args.save_dir is None else [args.save_dir]
    if args.voc_submission is not None:
        save_dirs.append(cli.check_writable_dir(
            voc_submission_folder(args.voc_submission, segmenter.num_classes),
            "--voc-submission"))
    predict_flags.print_setup(segmenter, args, crf, len(pairs))
    # A bar on a terminal; elsewhere (nohup, a pipe) a line at least every minute.
    with tqdm(total=len(pairs), desc="evaluate.py", unit="image", file=sys.stdout,
              dynamic_ncols=True, disable=None) as bar:
        lines = progress.EvaluationLines(
            len(pairs), lambda confusion: evaluation.Scores.from_confusion(confusion).mean_iou)
        confusion = evaluation.evaluate(
            segmenter.predictor, pairs, segmenter.num_classes, args.ignore_label, save_dirs,
            progress=lines if bar.disable else lambda done, confusion: bar.update(1),
            palette=segmenter.palette, batch_size=args.batch_size)
    if not labels:
        print(f"{counted(len(pairs), 'image')} predicted, not scored (the list names no labels); "
              f"label PNGs in: {', '.join(save_dirs)}")
        return 0
    if args.voc_submission is not None:
        print(f"VOC test-server results: {save_dirs[-1]} ({counted(len(pairs), 'PNG')})")
    scores = evaluation.Scores.from_confusion(confusion, segmenter.class_names)
    if args.json_output is not None:
        write_json(args, segmenter, crf, scores, len(pairs))
    if args.save_dir is not None:
        print(f"Predicted labels ({counted(len(pairs), 'PNG')}) written to {args.save_dir}")
    if args.json_output is not None:
        print(f"Scores, confusion matrix and settings (JSON) written to {args.json_output}")
    print(scores.report())
    return 0


def write_json(args, segmenter, crf, scores, num_images):
    """--json-output: every score, then the settings, then the confusion matrix."""
    settings = {"restore_from": segmenter.weights, "model": segmenter.model,
                "num_classes": segmenter.num_classes, "dataset": args.dataset,
                "classes": None if args.classes is None else os.path.abspath(args.classes),
                "class_names": segmenter.class_names,
                "ignore_label": args.ignore_label,
                "images": num_images, "scales": list(args.scales), "flip": args.flip,
                "deeplab_protocol": args.deeplab_protocol, "precision": segmenter.precision,
                "pad_size": args.pad_size if args.deeplab_protocol else None,
                "crf": dataclasses.asdict(crf) if crf is not None else None,
                "config": config_file.shown(args.config)}
    document = scores.as_dict()
    confusion = document.pop("confusion_matrix")
    document.update(settings=settings, confusion_matrix=confusion)
    with atomic_path(args.json_output) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2)


def entry():
    """The `deeplab-evaluate` command."""
    cli.run_and_exit(main)
