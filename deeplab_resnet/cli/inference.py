"""Segment one image, or every image of a folder, with a trained DeepLab-ResNet.

    python inference.py IMG_PATH MODEL_WEIGHTS [--save-dir ./output/] [--save-logits]
        [--voc-submission DIR] [--legend]
        [--model M] [--num-classes N] [--classes FILE] [--scales 1.0,0.75,0.5] [--flip] [--crf]
        [--precision fp32|bf16|fp16] [--tile H,W [--tile-overlap F]] [--batch-size N] ...

MODEL_WEIGHTS may also be a .tflite or .onnx file written by export.py (run by LiteRT or
onnxruntime: the optional extras .[tflite] / .[onnx]).

Writes, per image, into --save-dir:
    <stem>_mask.png     palette PNG, pixel value = class index, in the classes' colours
                        (--classes, else those the checkpoint records, else --dataset's)
    <stem>_overlay.png  the mask colours blended over the image
    legend.png          with --legend (once): each class's colour beside its name
    <stem>_logits.npy   with --save-logits: float32 (h', w', num_classes), the
                        network's raw output before any resizing
With --voc-submission DIR, the VOC test server's layout instead (--save-dir only
when given): DIR/results/VOC2012/Segmentation/comp6_test_cls/<stem>.png.
"""

import os
import sys

from deeplab_resnet.data.images import image_paths, read_image
from deeplab_resnet.data.palette import overlay, save_label_png, save_rgb_png
from deeplab_resnet.files import save_npy
from deeplab_resnet.predict.voc_submission import voc_submission_folder
from deeplab_resnet import cli
from deeplab_resnet.cli import predict_flags
from deeplab_resnet.errors import DeepLabError, counted, progress_line, shown

DEFAULT_SAVE_DIR = "./output/"


def get_arguments(argv=None):
    parser = cli.ArgumentParser(
        description="DeepLab-ResNet inference: label masks (and logits) for images.")
    parser.add_argument("img_path", metavar="IMG_PATH",
                        help="an image file (JPEG, PNG, BMP, ... any mode) or a folder of them")
    parser.add_argument("model_weights", metavar="MODEL_WEIGHTS",
                        help=cli.WEIGHTS_HELP)
    cli.add_model_args(parser)
    parser.add_argument("--save-dir", default=None,
                        help=f"folder for the outputs (default {DEFAULT_SAVE_DIR}; with "
                             "--voc-submission, none unless given)")
    parser.add_argument("--voc-submission", metavar="DIR", default=None,
                        help="write DIR/results/VOC2012/Segmentation/comp6_test_cls/<stem>.png "
                             "(palette PNGs of class indices), the layout the PASCAL VOC test "
                             "server takes; needs a 21-class model")
    parser.add_argument("--save-logits", action="store_true",
                        help="also write <stem>_logits.npy: the raw network output, float32 "
                             "(h', w', num_classes)")
    parser.add_argument("--legend", action="store_true",
                        help="also write legend.png into --save-dir: each class's colour "
                             "beside its name, to read the masks and overlays by")
    parser.add_argument("--keep-going", action="store_true",
                        help="skip images that cannot be read and go on; every skipped file "
                             "is listed at the end and the exit status is 1 (default: stop at "
                             "the first)")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip images whose outputs all exist already, so that a rerun "
                             "does only what is missing")
    predict_flags.add_dataset_arg(parser)
    predict_flags.add_prediction_args(parser)
    predict_flags.add_runtime_args(parser)
    args = parser.parse_args(argv)
    if args.tile is not None and args.save_logits:
        parser.error("--save-logits: a tiled prediction has no whole-image logits (each tile "
                     "has its own); drop --tile or --save-logits")
    return args


@cli.flag_errors
def main(argv=None):
    args = get_arguments(argv)
    cli.use_devices(args)
    paths = image_paths(args.img_path)
    crf = predict_flags.crf_params(args)
    save_dir = args.save_dir
    if save_dir is None and (args.voc_submission is None or args.save_logits):
        save_dir = DEFAULT_SAVE_DIR
    segmenter = predict_flags.load_segmenter(args, args.model_weights, crf,
                                             dataset=args.dataset)
    predict_flags.print_setup(segmenter, args, crf, len(paths))
    # Output folders are made once the weights loaded; a failure before the first image
    # is written leaves none of them behind, empty.
    with cli.new_folders_removed_on_failure(save_dir, args.voc_submission):
        outputs = _Outputs(args, segmenter, save_dir)
        if args.legend:
            outputs.write_legend(segmenter)
        skipped = _segment_all(segmenter, outputs, paths, args)
    return _summary(outputs, paths, skipped, args)


class _Outputs:
    """Where one image's outputs go, and writing them."""

    def __init__(self, args, segmenter, save_dir):
        self.save_dir, self.logits = save_dir, args.save_logits
        self.palette = segmenter.palette
        if save_dir is not None:
            cli.check_writable_dir(save_dir, "--save-dir")
        self.submission = None
        if args.voc_submission is not None:
            self.submission = cli.check_writable_dir(
                voc_submission_folder(args.voc_submission, segmenter.num_classes),
                "--voc-submission")
        self.written = 0

    def files(self, path):
        """The files written for the image `path`."""
        name = os.path.splitext(os.path.basename(path))[0]
        files = []
        if self.submission is not None:
            files.append(os.path.join(self.submission, name + ".png"))
        if self.save_dir is not None:
            stem = os.path.join(self.save_dir, name)
            files += [stem + "_mask.png", stem + "_overlay.png"]
            if self.logits:
                files.append(stem + "_logits.npy")
        return files

    def write_legend(self, segmenter):
        """legend.png in --save-dir: the classes' colours and names."""
        from deeplab_resnet.cli.pictures import legend_picture
        if self.save_dir is None:
            raise DeepLabError("--legend is written into --save-dir: give --save-dir")
        path = os.path.join(self.save_dir, "legend.png")
        save_rgb_png(legend_picture(segmenter.class_names, self.palette), path)
        print(f"legend of the {len(segmenter.class_names)} classes -> {path}")

    def write(self, path, image, prediction):
        """Writes the outputs of one image; returns the label PNGs written."""
        files, written = self.files(path), []
        if self.submission is not None:
            written.append(files.pop(0))
            save_label_png(prediction.labels, written[-1])
        if self.save_dir is not None:
            mask, overlay_path, *logits = files
            save_label_png(prediction.labels, mask, self.palette)
            save_rgb_png(overlay(image, prediction.labels, palette=self.palette),
                         overlay_path)
            if logits:
                save_npy(prediction.logits, logits[0])
            written.append(mask)
        self.written += 1
        return written


def _read(path):
    """(image, None), or (None, the DeepLabError) for an unreadable image."""
    try:
        return read_image(path), None
    except DeepLabError as exc:
        return None, exc


def _segment_all(segmenter, outputs, paths, args):
    """Segments every image (the next ones decoded while the network runs); returns
    {"broken": [(path, error)], "existing": [path]}: the images skipped."""
    from deeplab_resnet.predict import host
    from deeplab_resnet.predict.prediction import PREFETCH_DEPTH, prefetch
    skipped = {"broken": [], "existing": []}
    if args.skip_existing:
        skipped["existing"] = [path for path in paths
                               if all(os.path.exists(f) for f in outputs.files(path))]
        paths = [path for path in paths if path not in skipped["existing"]]
    decoded = zip(paths, prefetch(_read, paths, max(PREFETCH_DEPTH, args.batch_size)))
    for batch in host.batches(decoded, args.batch_size,
                              lambda item: None if item[1][1] is not None else item[1][0].shape):
        path, (image, error) = batch[0]
        if error is not None:
            if not args.keep_going and len(paths) == 1:
                raise error
            if not args.keep_going:
                raise DeepLabError(f"{error} (--keep-going skips unreadable images and goes "
                                   "on)", path=error.path)
            skipped["broken"].append(error)
            continue
        images = [image for _, (image, _) in batch]
        for (path, (image, _)), prediction in zip(batch, _predict(segmenter, images, args)):
            written = outputs.write(path, image, prediction)
            print(progress_line("inference.py", "image", outputs.written, len(paths),
                                [f"{shown(path)} -> {', '.join(shown(f) for f in written)}"]))
    return skipped


def _predict(segmenter, images, args):
    """Predictions of images of one size; labels only unless --save-logits needs the logits."""
    from deeplab_resnet.predict.host import Prediction
    if args.save_logits:
        return segmenter.predictor.predict_many(images)
    return [Prediction(labels, None, None)
            for labels in segmenter.predictor.labels_many(images)]


def _summary(outputs, paths, skipped, args):
    """The closing lines: what was written where, what was skipped; the exit status."""
    done = [f"{outputs.written} of {counted(len(paths), 'image')} segmented"]
    if outputs.save_dir is not None:
        kinds = "masks, overlays" + (" and logits" if args.save_logits else "")
        done.append(f"{kinds} in {outputs.save_dir}")
    if skipped["existing"]:
        done.append(f"{len(skipped['existing'])} skipped: their outputs exist "
                    "(--skip-existing)")
    print("; ".join(done))
    if outputs.submission is not None:
        print(f"VOC test-server results: {outputs.submission} ({counted(outputs.written, 'PNG')}); "
              f"archive the 'results' folder of {args.voc_submission} and upload it")
    if skipped["broken"]:
        print(f"{counted(len(skipped['broken']), 'unreadable image')} skipped (--keep-going):",
              file=sys.stderr)
        for error in skipped["broken"]:
            print(f"  {error}", file=sys.stderr)
        return 1
    return 0


def entry():
    """The `deeplab-inference` command."""
    cli.run_and_exit(main)
