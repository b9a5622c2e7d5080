"""Offline end-to-end demo: data -> training -> evaluation -> inference -> Caffe round trip.

    deeplab-demo [--output-dir demo_output] [--num-steps 300]     (or: python demo.py ...)

Needs no download and no GPU (a few minutes on two CPU cores):
  1. generates a small shapes dataset in VOC layout (JPEG images, palette label
     PNGs with 255 borders, list files);
  2. trains `--model tiny` on it with train.py's loop;
  3. evaluates it on the validation list with evaluate.py (mIoU far above chance);
  4. runs inference.py on validation images and draws image | ground truth |
     prediction grid as a PNG;
  5. writes a random-weight caffemodel for the tiny net's deploy prototxt,
     converts it with convert.py and runs inference.py on the checkpoint and on
     the .caffemodel itself, checking both give the same logits.
Every step runs the project's real command-line code; the demo prints where
each output is.
"""

import json
import os
import sys
import time

import numpy as np

from deeplab_resnet import caffe, cli, shapes, utils
from deeplab_resnet.cli import convert, evaluate, inference, train

NUM_CLASSES = len(shapes.CLASSES)
GRID_IMAGES = 4


def _banner(number, text):
    print(f"\n[{number}/5] {text}", flush=True)


def _grid(rows):
    """Stacks rows of equally tall RGB panels with white gaps into one image."""
    gap = 4
    width = max(sum(p.shape[1] for p in row) + gap * (len(row) - 1) for row in rows)
    height = sum(row[0].shape[0] for row in rows) + gap * (len(rows) - 1)
    canvas = np.full((height, width, 3), 255, np.uint8)
    y = 0
    for row in rows:
        x = 0
        for panel in row:
            canvas[y:y + panel.shape[0], x:x + panel.shape[1]] = panel
            x += panel.shape[1] + gap
        y += row[0].shape[0] + gap
    return canvas


def train_step(data, out, num_steps, seed):
    snapshots = os.path.join(out, "snapshots")
    train.main([
        "--model", "tiny", "--num-classes", str(NUM_CLASSES),
        "--data-dir", data["root"], "--data-list", data["train"],
        "--input-size", "64,64", "--batch-size", "10", "--num-steps", str(num_steps),
        "--learning-rate", "0.001", "--save-pred-every", str(max(1, num_steps // 3)),
        "--is-training", "--random-mirror", "--random-scale", "--random-seed", str(seed),
        "--snapshot-dir", snapshots])
    return snapshots


def evaluate_step(data, out, snapshots):
    report = os.path.join(out, "evaluation.json")
    evaluate.main(["--data-dir", data["root"], "--data-list", data["val"],
                   "--class-names", ",".join(shapes.CLASSES),
                   "--restore-from", snapshots, "--save-dir", os.path.join(out, "val_predictions"),
                   "--json-output", report])
    with open(report) as f:
        return json.load(f)["mean_iou"], report


def picture_step(data, out, snapshots):
    images, labels = utils.read_list(data["root"], data["val"])
    masks = os.path.join(out, "inference")
    rows = []
    for image_path, label_path in list(zip(images, labels))[:GRID_IMAGES]:
        inference.main([image_path, snapshots, "--save-dir", masks])
        stem = os.path.splitext(os.path.basename(image_path))[0]
        predicted = utils.read_label(os.path.join(masks, f"{stem}_mask.png"))
        rows.append([utils.read_image(image_path), utils.colorize(utils.read_label(label_path)),
                     utils.colorize(predicted)])
    grid = os.path.join(out, "predictions_grid.png")
    utils.save_rgb_png(_grid(rows), grid)
    return grid, masks


def caffe_step(data, out, seed):
    from deeplab_resnet.model import DeepLabResNet  # TensorFlow: after cli.run quieted it
    folder = os.path.join(out, "caffe")
    os.makedirs(folder, exist_ok=True)
    prototxt = os.path.join(folder, "deploy_tiny.prototxt")
    with utils.atomic_path(prototxt) as tmp:
        with open(tmp, "w") as f:
            f.write(caffe.deploy_prototxt("tiny", NUM_CLASSES))
    model = DeepLabResNet("tiny", NUM_CLASSES, seed=seed + 1)
    caffemodel = caffe.write_caffemodel(prototxt, {k: v.numpy() for k, v in model.params.items()},
                                        os.path.join(folder, "random_tiny.caffemodel"),
                                        bn_factor=0.5)
    ckpt = os.path.join(folder, "converted", "tiny")
    convert.main([prototxt, "--caffemodel", caffemodel, "--ckpt-path", ckpt])
    image = utils.read_list(data["root"], data["val"])[0][0]
    stem = os.path.splitext(os.path.basename(image))[0]
    logits = []
    for weights, name in ((ckpt, "from_checkpoint"), (caffemodel, "from_caffemodel")):
        save_dir = os.path.join(folder, name)
        inference.main([image, weights, "--model", "tiny", "--prototxt", prototxt,
                        "--save-dir", save_dir, "--save-logits"])
        logits.append(np.load(os.path.join(save_dir, f"{stem}_logits.npy"), allow_pickle=False))
    difference = float(np.abs(logits[0] - logits[1]).max() / np.abs(logits[1]).max())
    return folder, ckpt, difference


def main(argv=None):
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="demo_output",
                        help="where everything is written (default: %(default)s)")
    parser.add_argument("--num-steps", type=cli.positive_int, default=300,
                        help="training updates (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and weights")
    args = parser.parse_args(argv)
    out = os.path.abspath(cli.check_writable_dir(args.output_dir, "--output-dir"))
    start = time.time()

    _banner(1, "Generating a shapes dataset in VOC layout")
    data = shapes.make_shapes_dataset(os.path.join(out, "data"), num_train=64, num_val=16,
                                      seed=args.seed)
    print(f"    {data['root']} (train.txt: 64 images, val.txt: 16)")

    _banner(2, f"Training --model tiny for {args.num_steps} steps (train.py's loop)")
    snapshots = train_step(data, out, args.num_steps, args.seed)

    _banner(3, "Evaluating on the validation list (evaluate.py)")
    mean_iou, report = evaluate_step(data, out, snapshots)
    chance = 1.0 / NUM_CLASSES
    verdict = "well above" if mean_iou > 2 * chance else "NOT above"
    print(f"    mean IoU {mean_iou:.3f} — {verdict} chance "
          f"(~{chance:.2f} for {NUM_CLASSES} classes)")

    _banner(4, "Inference and a picture grid (inference.py)")
    grid, masks = picture_step(data, out, snapshots)

    _banner(5, "Caffe round trip: random caffemodel -> convert.py -> inference.py")
    folder, ckpt, difference = caffe_step(data, out, args.seed)
    print(f"    logits from the converted checkpoint and from the .caffemodel directly: "
          f"max relative difference {difference:.1e}")

    print(f"\nDone in {time.time() - start:.0f} s. Outputs:")
    for what, path in (("dataset", data["root"]), ("checkpoints + TensorBoard logs", snapshots),
                       ("evaluation report", report), ("prediction grid", grid),
                       ("masks and overlays", masks), ("caffemodel round trip", folder),
                       ("converted checkpoint", ckpt)):
        print(f"    {what:32} {path}")
    print(f"    (tensorboard --logdir {snapshots})")
    if mean_iou <= 2 * chance or difference > 1e-5:
        print("error: the demo did not reach its expected results", file=sys.stderr)
        return 1
    return 0


def entry():
    """The `deeplab-demo` command."""
    cli.run(main)
