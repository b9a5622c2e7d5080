"""What DeepLab's align-corners geometry changes on a trained model (mIoU, default test protocol).

Trains the tiny net on the synthetic shapes data twice with train.py's loop,
once with DeepLab's label shrink (logit i takes label pixel i*(H-1)/(h-1), now
the only one) and once with the previous TF-nearest shrink (half-pixel
centres), then scores both on the validation images with the default protocol,
logits resized to the image by DeepLab's geometry (pixel p reads logit p/8,
now the only one) and by the previous TF2 bilinear resize (half-pixel
centres). The previous geometry is re-created here only to measure it.

    python benchmarks/label_geometry.py [--num-steps 300] [--seeds 0,1]   (package installed)
"""

import argparse
import contextlib
import os
import tempfile

import numpy as np
import tensorflow as tf

from deeplab_resnet.data.images import read_image
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.lists import read_list
from deeplab_resnet import training
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.model import geometry
from deeplab_resnet.predict import metrics
from deeplab_resnet.data import shapes
from deeplab_resnet.cli import train_flags
from deeplab_resnet.predict.prediction import Predictor


def tf_nearest_shrink(labels, size):
    """The previous label shrink: tf.image.resize nearest (half-pixel centres)."""
    return tf.image.resize(labels[..., None], size, method="nearest")[..., 0]


def tf_bilinear_to_image(logits, size):
    """The previous test-time resize: tf.image.resize bilinear (half-pixel centres)."""
    return tf.image.resize(logits, size, method="bilinear")


@contextlib.contextmanager
def replaced(name, function):
    original = getattr(geometry, name)
    setattr(geometry, name, function)
    try:
        yield
    finally:
        setattr(geometry, name, original)


def train(data, folder, num_steps, seed, old_shrink):
    args = ["--model", "tiny", "--num-classes", str(len(shapes.CLASSES)),
            "--data-dir", data["root"], "--data-list", data["train"], "--input-size", "64,64",
            "--batch-size", "10", "--num-steps", str(num_steps), "--learning-rate", "0.001",
            "--save-pred-every", str(num_steps), "--save-num-images", "0", "--is-training",
            "--random-mirror", "--random-scale", "--random-seed", str(seed),
            "--snapshot-dir", folder]
    shrink = tf_nearest_shrink if old_shrink else geometry.shrink_labels
    with replaced("shrink_labels", shrink):
        train_flags.main(training.TRAIN, args)
    return checkpoint.load_weights(folder)


def mean_iou(model, data, old_resize):
    resize = tf_bilinear_to_image if old_resize else geometry.logits_to_image
    n = len(shapes.CLASSES)
    confusion = np.zeros((n, n), np.int64)
    with replaced("logits_to_image", resize):
        predictor = Predictor(model)
        for image, label in zip(*read_list(data["root"], data["val"])):
            label = read_label(label)
            labels = predictor(read_image(image)).labels
            confusion += metrics.confusion_matrix(label, labels, n)
    return metrics.scores(confusion)["mean_iou"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        data = shapes.make_shapes_dataset(os.path.join(work, "data"), num_train=64,
                                          num_val=48, seed=0)
        for seed in (int(s) for s in args.seeds.split(",")):
            for old_shrink in (False, True):
                folder = os.path.join(work, f"seed{seed}_{'old' if old_shrink else 'new'}")
                model = train(data, folder, args.num_steps, seed, old_shrink)
                rows.append((seed, old_shrink, mean_iou(model, data, False),
                             mean_iou(model, data, True)))
    print("| trained with label shrink | seed | mIoU, test: p reads logit p/8 (now) "
          "| mIoU, test: TF2 half-pixel bilinear (before) |")
    print("|---|---|---|---|")
    for seed, old_shrink, new_test, old_test in rows:
        shrink = "TF nearest (before)" if old_shrink else "DeepLab's (now)"
        print(f"| {shrink} | {seed} | {new_test:.4f} | {old_test:.4f} |")


if __name__ == "__main__":
    main()
