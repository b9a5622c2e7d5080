"""Segment one image, or every image of a folder, with a trained DeepLab-ResNet.

    python inference.py IMG_PATH MODEL_WEIGHTS [--save-dir ./output/] [--save-logits]
        [--model M] [--num-classes N] [--scales 1.0,0.75,0.5] [--flip] [--crf]
        [--precision fp32|bf16|fp16] ...

Writes, per image, into --save-dir:
    <stem>_mask.png     palette PNG, pixel value = class index, VOC colours
    <stem>_overlay.png  the mask colours blended over the image
    <stem>_logits.npy   with --save-logits: float32 (h', w', num_classes), the
                        network's raw output before any resizing
"""

import os

from deeplab_resnet import checkpoint, cli, predict, utils
from deeplab_resnet.errors import UserError


def get_arguments(argv=None):
    parser = cli.ArgumentParser(
        description="DeepLab-ResNet inference: label masks (and logits) for images.")
    parser.add_argument("img_path", metavar="IMG_PATH",
                        help="an image file (JPEG, PNG, BMP, ... any mode) or a folder of them")
    parser.add_argument("model_weights", metavar="MODEL_WEIGHTS",
                        help="checkpoint prefix, folder of checkpoints, or .caffemodel")
    cli.add_model_args(parser)
    parser.add_argument("--save-dir", default="./output/",
                        help="folder for the outputs (default ./output/)")
    parser.add_argument("--save-logits", action="store_true",
                        help="also write <stem>_logits.npy: the raw network output, float32 "
                             "(h', w', num_classes)")
    predict.add_prediction_args(parser)
    return parser.parse_args(argv)


def image_paths(path):
    """The images to segment: `path` itself, or the image files of a folder."""
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or folder")
    if not os.path.isdir(path):
        return [path]
    paths = utils.list_images(path)
    if not paths:
        raise UserError(f"{path}: folder holds no image files ({', '.join(utils.IMAGE_EXTENSIONS)})")
    stems = {}
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in stems:
            raise UserError(f"{p} and {stems[stem]} would write the same outputs ({stem}_mask.png)")
        stems[stem] = p
    return paths


def main(argv=None):
    args = get_arguments(argv)
    paths = image_paths(args.img_path)
    crf = predict.crf_from_args(args)
    cli.check_writable_dir(args.save_dir, "--save-dir")
    model = checkpoint.load_weights(args.model_weights, args.model, args.num_classes,
                                    prototxt=args.prototxt)
    predictor = predict.predictor_from_args(model, args, crf)
    for path in paths:
        image = utils.read_image(path)
        prediction = predictor(image)
        stem = os.path.join(args.save_dir, os.path.splitext(os.path.basename(path))[0])
        utils.save_label_png(prediction.labels, stem + "_mask.png")
        utils.save_rgb_png(utils.overlay(image, prediction.labels), stem + "_overlay.png")
        if args.save_logits:
            utils.save_npy(prediction.logits, stem + "_logits.npy")
        print(f"{path} -> {stem}_mask.png")
    return 0


if __name__ == "__main__":
    cli.run(main)
