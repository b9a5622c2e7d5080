"""Offline end-to-end demo: data -> training -> evaluation -> inference -> Caffe round trip.

    deeplab-demo [--output-dir demo_output] [--num-steps 300] [--seed 0]
    (or: python demo.py ...)

Needs no download and no GPU (a few minutes on two CPU cores):
  1. generates a small shapes dataset in VOC layout (JPEG images, palette label
     PNGs with 255 borders, list files);
  2. trains `--model tiny` on it with train.py's loop;
  3. evaluates it on the validation list with evaluate.py (mIoU far above chance);
  4. runs inference.py once on a folder of validation images (inference/images/) and
     draws a picture: columns titled image | ground truth | prediction, and a legend
     of the class colours;
  5. writes a random-weight caffemodel for the tiny net's deploy prototxt,
     converts it with convert.py and runs inference.py on the checkpoint and on
     the .caffemodel itself, checking both give the same logits.
Every step runs the project's real command-line code; the demo ends with a list
of every folder (and main file) it wrote. It records its settings in
--output-dir (demo_settings.json): a rerun with the same settings resumes (or
reuses) the training there; one with other settings starts over, saying so.
"""

import json
import os
import shutil
import sys
import time

import numpy as np

from deeplab_resnet.data.classes import palette_of
from deeplab_resnet.data.images import read_image
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.lists import read_list
from deeplab_resnet.data.palette import colorize, save_rgb_png
from deeplab_resnet.files import atomic_path, unused_path
from deeplab_resnet import cli, defaults
from deeplab_resnet.weights import caffe
from deeplab_resnet.data import shapes
from deeplab_resnet.cli import convert, evaluate, inference, train
from deeplab_resnet.cli.pictures import picture
from deeplab_resnet.errors import DeepLabError

NUM_CLASSES = len(shapes.CLASSES)
GRID_IMAGES = 4


def _banner(number, text):
    print(f"\n[{number}/5] {text}", flush=True)


COLUMN_TITLES = ("image", "ground truth", "prediction")


def train_step(data, out, num_steps, seed):
    """Trains in out/snapshots; a run there that is complete (a rerun with the same settings)
    is reused as it is."""
    from deeplab_resnet.weights import checkpoint  # TensorFlow: after cli.run quieted it
    from deeplab_resnet.training import run_record
    snapshots = os.path.join(out, "snapshots")
    latest = checkpoint.latest_in(snapshots) if os.path.isdir(snapshots) else None
    try:
        done = None if latest is None else run_record.read(latest)[1]
    except checkpoint.READ_ERRORS:
        done = None  # unreadable: train.py's resume says so
    if done == num_steps:
        print(f"    already trained by an earlier run with these settings: {latest}")
        return snapshots
    train.main([
        "--model", "tiny", "--num-classes", str(NUM_CLASSES),
        "--class-names", ",".join(shapes.CLASSES),
        "--data-dir", data["root"], "--data-list", data["train"],
        "--input-size", "64,64", "--batch-size", "10", "--num-steps", str(num_steps),
        "--learning-rate", "0.001", "--save-pred-every", str(max(1, num_steps // 3)),
        "--is-training", "--random-mirror", "--random-scale", "--random-seed", str(seed),
        "--snapshot-dir", snapshots])
    return snapshots


def evaluate_step(data, out, snapshots):
    report = os.path.join(out, "evaluation.json")
    predictions = os.path.join(out, "val_predictions")
    # The class names come from the checkpoint: training recorded them.
    evaluate.main(["--data-dir", data["root"], "--data-list", data["val"],
                   "--restore-from", snapshots, "--save-dir", predictions,
                   "--json-output", report])
    with open(report) as f:
        return json.load(f)["mean_iou"], report, predictions


def picture_step(data, out, snapshots):
    images, labels = read_list(data["root"], data["val"])
    pairs = list(zip(images, labels))[:GRID_IMAGES]
    masks = os.path.join(out, "inference")
    # One inference.py run on a folder of the grid's images, as a user segments a folder.
    grid_images = os.path.join(masks, "images")
    os.makedirs(grid_images, exist_ok=True)
    for image_path, _ in pairs:
        shutil.copyfile(image_path, os.path.join(grid_images, os.path.basename(image_path)))
    inference.main([grid_images, snapshots, "--save-dir", masks])
    from deeplab_resnet.weights import checkpoint  # TensorFlow: after cli.run quieted it
    recorded = checkpoint.describe(snapshots)  # the names and colours training recorded
    names = recorded.class_names or shapes.CLASSES
    palette = None if recorded.class_colours is None else palette_of(recorded.class_colours)
    rows = []
    for image_path, label_path in pairs:
        stem = os.path.splitext(os.path.basename(image_path))[0]
        predicted = read_label(os.path.join(masks, f"{stem}_mask.png"))
        rows.append([read_image(image_path), colorize(read_label(label_path), palette),
                     colorize(predicted, palette)])
    grid = os.path.join(out, "predictions_grid.png")
    legend = [*enumerate(names), (defaults.IGNORE_LABEL, "ignored")]
    save_rgb_png(picture(rows, COLUMN_TITLES, legend, palette), grid)
    return grid, masks


def caffe_step(data, out, seed):
    from deeplab_resnet.model.network import DeepLabResNet  # TensorFlow: after cli.run quieted it
    folder = os.path.join(out, "caffe")
    os.makedirs(folder, exist_ok=True)
    prototxt = os.path.join(folder, "deploy_tiny.prototxt")
    with atomic_path(prototxt) as tmp:
        with open(tmp, "w") as f:
            f.write(caffe.deploy_prototxt("tiny", NUM_CLASSES))
    model = DeepLabResNet("tiny", NUM_CLASSES, seed=seed + 1)
    caffemodel = caffe.write_caffemodel(prototxt,
                                        {k: v.numpy() for k, v in model.params.items()},
                                        os.path.join(folder, "random_tiny.caffemodel"),
                                        bn_factor=0.5)
    ckpt = os.path.join(folder, "converted", "tiny")
    convert.main([prototxt, "--caffemodel", caffemodel, "--ckpt-path", ckpt])
    image = read_list(data["root"], data["val"])[0][0]
    stem = os.path.splitext(os.path.basename(image))[0]
    logits, outputs = [], []
    for weights, name in ((ckpt, "from_checkpoint"), (caffemodel, "from_caffemodel")):
        save_dir = os.path.join(folder, name)
        inference.main([image, weights, "--model", "tiny", "--prototxt", prototxt,
                        "--save-dir", save_dir, "--save-logits"])
        logits.append(np.load(os.path.join(save_dir, f"{stem}_logits.npy"), allow_pickle=False))
        outputs.append(save_dir)
    difference = float(np.abs(logits[0] - logits[1]).max() / np.abs(logits[1]).max())
    return folder, ckpt, outputs, difference


def build_parser():
    """The flags of `deeplab-demo` (built without running it, e.g. for --help)."""
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="demo_output",
                        help="where everything is written; a rerun with other settings starts "
                             "over there (default: %(default)s)")
    parser.add_argument("--num-steps", type=cli.positive_int, default=300,
                        help="training updates (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data and the weights (default: %(default)s)")
    return parser


# The file in --output-dir recording the settings of the demo run there, and everything else
# the demo writes there (removed when a rerun with other settings starts over).
SETTINGS_FILE = "demo_settings.json"
OUTPUTS = ("data", "snapshots", "evaluation.json", "val_predictions", "inference",
           "predictions_grid.png", "caffe")


def _as_flags(settings):
    return " ".join(f"--{name.replace('_', '-')} {value}" for name, value in settings.items())


def _saved_settings(out):
    """The settings recorded in `out` (None: no record; {} : an unreadable one)."""
    try:
        with open(os.path.join(out, SETTINGS_FILE), encoding="utf-8") as f:
            saved = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def claim_output_dir(out, settings):
    """Makes `out` the folder of a demo run with `settings`, and records them there.

    A previous run with the same settings is kept (a rerun resumes or reuses its
    training); one with other settings is removed, saying so. Files the demo
    would write, without a record of its settings, are not the demo's to remove:
    an error names another --output-dir.
    """
    present = [name for name in OUTPUTS if os.path.lexists(os.path.join(out, name))]
    saved = _saved_settings(out)
    if saved is None and present:
        raise DeepLabError(f"--output-dir {out} holds {', '.join(present)} but no "
                           f"{SETTINGS_FILE}, so not a demo run: give another --output-dir, "
                           f"e.g. --output-dir {unused_path(out)}")
    if saved is not None and saved != settings:
        was = _as_flags(saved) if saved else "unknown settings"
        print(f"{out} holds a demo run with {was}: starting over with {_as_flags(settings)}",
              flush=True)
        for name in present:
            path = os.path.join(out, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    with atomic_path(os.path.join(out, SETTINGS_FILE)) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(settings, f)


@cli.flag_errors
def main(argv=None):
    args = build_parser().parse_args(argv)
    out = os.path.abspath(cli.check_writable_dir(args.output_dir, "--output-dir"))
    claim_output_dir(out, {"num_steps": args.num_steps, "seed": args.seed})
    start = time.time()

    _banner(1, "Generating a shapes dataset in VOC layout")
    data = shapes.make_shapes_dataset(os.path.join(out, "data"), num_train=64, num_val=16,
                                      seed=args.seed)
    print(f"    {data['root']} (train.txt: 64 images, val.txt: 16)")

    _banner(2, f"Training --model tiny for {args.num_steps} steps (train.py's loop)")
    snapshots = train_step(data, out, args.num_steps, args.seed)

    _banner(3, "Evaluating on the validation list (evaluate.py)")
    mean_iou, report, predictions = evaluate_step(data, out, snapshots)
    chance = 1.0 / NUM_CLASSES
    verdict = "well above" if mean_iou > 2 * chance else "NOT above"
    print(f"    mean IoU {mean_iou:.3f} — {verdict} chance "
          f"(~{chance:.2f} for {NUM_CLASSES} classes)")

    _banner(4, "Inference and a picture grid (inference.py)")
    grid, masks = picture_step(data, out, snapshots)

    _banner(5, "Caffe round trip: random caffemodel -> convert.py -> inference.py")
    folder, ckpt, from_each, difference = caffe_step(data, out, args.seed)
    print(f"    logits from the converted checkpoint and from the .caffemodel directly: "
          f"max relative difference {difference:.1e}")

    print(f"\nDone in {time.time() - start:.0f} s. Outputs (every folder written):")
    for what, path in (("settings of this run", os.path.join(out, SETTINGS_FILE)),
                       ("dataset (images, labels, lists)", data["root"]),
                       ("checkpoints + TensorBoard logs", snapshots),
                       ("evaluation report", report), ("validation predictions", predictions),
                       ("prediction grid", grid), ("masks and overlays", masks),
                       ("caffemodel round trip", folder),
                       ("converted checkpoint", os.path.dirname(ckpt)),
                       ("inference from the checkpoint", from_each[0]),
                       ("inference from the caffemodel", from_each[1])):
        print(f"    {what:32} {path}")
    print(f"    (tensorboard --logdir {snapshots})")
    if mean_iou <= 2 * chance or difference > 1e-5:
        print("error: the demo did not reach its expected results", file=sys.stderr)
        return 1
    return 0


def entry():
    """The `deeplab-demo` command."""
    cli.run_and_exit(main)
