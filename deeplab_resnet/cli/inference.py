"""Segment one image, or every image of a folder, with a trained DeepLab-ResNet.

    python inference.py IMG_PATH MODEL_WEIGHTS [--save-dir ./output/] [--save-logits]
        [--voc-submission DIR]
        [--model M] [--num-classes N] [--scales 1.0,0.75,0.5] [--flip] [--crf]
        [--precision fp32|bf16|fp16] ...

Writes, per image, into --save-dir:
    <stem>_mask.png     palette PNG, pixel value = class index, VOC colours
    <stem>_overlay.png  the mask colours blended over the image
    <stem>_logits.npy   with --save-logits: float32 (h', w', num_classes), the
                        network's raw output before any resizing
With --voc-submission DIR, the VOC test server's layout instead (--save-dir only
when given): DIR/results/VOC2012/Segmentation/comp6_test_cls/<stem>.png.
"""

import os

from deeplab_resnet import cli
from deeplab_resnet.cli import predict_flags

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
    predict_flags.add_prediction_args(parser)
    return parser.parse_args(argv)


@cli.flag_errors
def main(argv=None):
    args = get_arguments(argv)
    cli.use_devices(args)
    from deeplab_resnet import inference, predict, utils
    paths = inference.image_paths(args.img_path)
    crf = predict_flags.crf_params(args)
    save_dir = args.save_dir
    if save_dir is None and (args.voc_submission is None or args.save_logits):
        save_dir = DEFAULT_SAVE_DIR
    if save_dir is not None:
        cli.check_writable_dir(save_dir, "--save-dir")
    segmenter = predict_flags.load_segmenter(args, args.model_weights, crf)
    submission = None
    if args.voc_submission is not None:
        submission = cli.check_writable_dir(
            utils.voc_submission_folder(args.voc_submission, segmenter.num_classes),
            "--voc-submission")
    # The next images are decoded while the network runs.
    for path, image in zip(paths, predict.prefetch(utils.read_image, paths)):
        prediction = segmenter.predict(image)
        name = os.path.splitext(os.path.basename(path))[0]
        written = []
        if submission is not None:
            written.append(os.path.join(submission, name + ".png"))
            utils.save_label_png(prediction.labels, written[-1])
        if save_dir is not None:
            stem = os.path.join(save_dir, name)
            written.append(stem + "_mask.png")
            utils.save_label_png(prediction.labels, stem + "_mask.png")
            utils.save_rgb_png(utils.overlay(image, prediction.labels), stem + "_overlay.png")
            if args.save_logits:
                utils.save_npy(prediction.logits, stem + "_logits.npy")
        print(f"{path} -> {', '.join(written)}")
    if submission is not None:
        print(f"VOC test-server results: {submission} ({len(paths)} PNGs); archive the "
              f"'results' folder of {args.voc_submission} and upload it")
    return 0


def entry():
    """The `deeplab-inference` command."""
    cli.run(main)
