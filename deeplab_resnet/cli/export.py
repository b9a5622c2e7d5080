"""Export a DeepLab-ResNet checkpoint for serving: a TensorFlow SavedModel, a LiteRT (.tflite)
or an ONNX (.onnx) file.

    python export.py --restore-from CKPT --output-dir DIR [--model M] [--num-classes N]
        [--classes FILE] [--dataset D]
        [--scales 1.0,0.75,0.5] [--flip] [--deeplab-protocol] [--precision fp32|bf16|fp16]
    python export.py --restore-from CKPT --format tflite|onnx --output FILE
        [--input-size H,W] [--quantize fp16|int8 --calibration-list LIST [--data-dir DIR]]

The SavedModel's `serving_default` signature takes `image`: a uint8 RGB tensor [H, W, 3] of
any size, and returns `labels` (int32 [H, W], class indices) and `probabilities` (float32
[H, W, num_classes]) at the image's resolution, computed exactly as inference.py computes
them (dense CRF excepted: it is not a TensorFlow op). The `classes` signature (no inputs)
returns the class names (`class_names`, string [C]) and colours (`class_colours`, uint8
[C, 3]): those of --classes, else those the checkpoint records, else --dataset's. With
--precision bf16 or fp16 the saved network computes in that precision (the signature is
unchanged; the ASPP head and the logits stay float32), and the export is refused on a machine
without native arithmetic for it (bf16: a GPU of compute capability >= 8.0 or a CPU with
AVX512-BF16 or AMX; fp16: compute capability >= 7.0 or AVX512-FP16), rather than exporting
fp32 under its name. The SavedModel records the precision its graph computes in: the string
variable `precision` of the loaded object.

--format tflite / onnx writes one file with the same input and outputs (and `logits`), for
images of --input-size H,W or, without it, of any size; the class names and colours are in
the file's metadata. --quantize (tflite): fp16 (float16 weights) or int8 (every operation in
int8, calibrated on the images of --calibration-list). Check an export with the commands
you know: `inference.py IMG model.tflite`, `evaluate.py --restore-from model.onnx ...`.
Everything is written to a temporary path beside the output and renamed into place, so a
failed export leaves nothing.
"""

import os

from deeplab_resnet import cli
from deeplab_resnet.cli import predict_flags
from deeplab_resnet.errors import DeepLabError

FORMATS = ("savedmodel", "tflite", "onnx")


def get_arguments(argv=None):
    parser = cli.ArgumentParser(
        description="Export a DeepLab-ResNet checkpoint as a SavedModel, .tflite or .onnx "
                    "(uint8 image in, class-index map and probabilities out).")
    parser.add_argument("--restore-from", required=True,
                        help=cli.WEIGHTS_HELP)
    parser.add_argument("--format", choices=FORMATS, default="savedmodel",
                        help="savedmodel (a folder, --output-dir; default), tflite (LiteRT) or "
                             "onnx (a file, --output)")
    parser.add_argument("--output-dir", default=None,
                        help="SavedModel folder to create (must not exist, or be empty); for "
                             "tflite/onnx, the folder to write model.tflite / model.onnx into")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="tflite/onnx: the file to create (must not exist)")
    parser.add_argument("--input-size", type=cli.size_pair, default=None, metavar="H,W",
                        help="tflite/onnx: the one image size the file takes (default: any)")
    parser.add_argument("--quantize", choices=("fp16", "int8"), default=None,
                        help="tflite: fp16 weights, or int8 everything (needs "
                             "--calibration-list)")
    parser.add_argument("--calibration-list", default=None, metavar="LIST",
                        help="int8: list file of representative images (first column; "
                             "relative to --data-dir), e.g. 100 training images")
    parser.add_argument("--data-dir", default=None,
                        help="folder the paths of --calibration-list are relative to")
    cli.add_model_args(parser)
    predict_flags.add_dataset_arg(parser)
    predict_flags.add_prediction_args(parser, with_crf=False)
    args = parser.parse_args(argv)
    if args.format == "savedmodel":
        if args.output_dir is None:
            parser.error("--output-dir is required (the SavedModel folder)")
        for flag in ("output", "input_size", "quantize", "calibration_list"):
            if getattr(args, flag) is not None:
                parser.error(f"{cli.flag_name(flag)}: only with --format tflite or onnx")
    elif (args.output is None) == (args.output_dir is None):
        parser.error(f"--format {args.format}: give --output FILE (or --output-dir DIR)")
    if args.quantize is not None and args.format != "tflite":
        parser.error("--quantize: only with --format tflite")
    if args.quantize == "int8" and args.calibration_list is None:
        parser.error("--quantize int8 needs --calibration-list LIST (and --data-dir): the "
                     "representative images the int8 ranges are calibrated on")
    return args


def _output_file(args):
    if args.output is not None:
        return args.output
    cli.check_writable_dir(args.output_dir, "--output-dir")
    return os.path.join(args.output_dir, f"model.{args.format}")


@cli.flag_errors
def main(argv=None):
    args = get_arguments(argv)
    cli.use_devices(args)
    from deeplab_resnet.predict import export
    export.check_precision(args.precision)
    if args.format == "savedmodel":
        output_dir = export.check_output_dir(args.output_dir)  # before the weights are read
        segmenter = predict_flags.load_segmenter(args, args.restore_from, dataset=args.dataset)
        computes_in = export.export(segmenter.predictor, output_dir, segmenter.class_names,
                                    segmenter.palette)
        print(f"SavedModel written to {output_dir} (signature serving_default: image uint8 "
              f"[H, W, 3] -> labels int32 [H, W], probabilities float32 [H, W, "
              f"{segmenter.num_classes}]; computing in {computes_in})")
        return 0
    return _export_file(args, export)


def _export_file(args, export):
    """--format tflite / onnx: checks, loads, converts, writes; the exit status."""
    if args.format == "onnx":
        from deeplab_resnet.predict import onnx_file
        onnx_file.check_exporter()
    output = export.check_output_file(_output_file(args), "output")
    calibration = None
    if args.calibration_list is not None:
        from deeplab_resnet.data.lists import read_list
        calibration, _ = read_list(args.data_dir, args.calibration_list, with_labels=False)
        if not calibration:
            raise DeepLabError(f"--calibration-list {args.calibration_list}: names no images")
    segmenter = predict_flags.load_segmenter(args, args.restore_from, dataset=args.dataset)
    segmenter.export(output, args.format, quantize=args.quantize, input_size=args.input_size,
                     calibration=calibration)
    size = "H, W" if args.input_size is None else cli.typed(args.input_size).replace(",", ", ")
    kind = args.format + ("" if args.quantize is None else f" {args.quantize}")
    print(f"{kind} written to {output} (image uint8 [{size}, 3] -> labels int32, probabilities "
          f"float32 [..., {segmenter.num_classes}], logits; classes and colours in its "
          "metadata)")
    return 0


def entry():
    """The `deeplab-export` command."""
    cli.run_and_exit(main)
