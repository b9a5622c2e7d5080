"""Accuracy of reduced-precision inference on a trained network.

Random weights give low-confidence logits, which say little about how often a
reduced precision changes a trained network's answer. This script trains the
tiny network on the synthetic shapes set (train.py's loop, as demo.py does),
then predicts the validation images with the BN-folded network in float32 and
in bfloat16 (whole network, and with the ASPP head in float32), and prints, for
each reduced precision, the fraction of pixels whose label equals float32's
and the mean IoU against the ground truth beside float32's.

Usage:
    python benchmarks/bench_precision.py [--num-steps 300] [--num-val 64] [--precisions bf16]
"""

import argparse
import os
import tempfile

import numpy as np


from deeplab_resnet.data.images import read_image
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.lists import read_list
from deeplab_resnet import defaults, training
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.predict import metrics
from deeplab_resnet.runtime import precision
from deeplab_resnet.data import shapes
from deeplab_resnet.cli import train_flags
from deeplab_resnet.model.fused import FusedDeepLab
from deeplab_resnet.predict.prediction import Predictor

NUM_CLASSES = len(shapes.CLASSES)


def train_tiny(data, snapshots, num_steps, seed):
    train_flags.main(training.TRAIN, [
        "--model", "tiny", "--num-classes", str(NUM_CLASSES),
        "--data-dir", data["root"], "--data-list", data["train"],
        "--input-size", "64,64", "--batch-size", "10", "--num-steps", str(num_steps),
        "--learning-rate", "0.001", "--save-pred-every", str(num_steps), "--save-num-images", "0",
        "--is-training", "--random-mirror", "--random-scale", "--random-seed", str(seed),
        "--snapshot-dir", snapshots])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-steps", type=int, default=300)
    parser.add_argument("--num-train", type=int, default=64)
    parser.add_argument("--num-val", type=int, default=64)
    parser.add_argument("--precisions", default="bf16",
                        help="reduced precisions to compare with fp32 (comma-separated)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        data = shapes.make_shapes_dataset(os.path.join(workdir, "data"), args.num_train,
                                          args.num_val, seed=args.seed)
        snapshots = os.path.join(workdir, "snapshots")
        train_tiny(data, snapshots, args.num_steps, args.seed)
        model = checkpoint.load_weights(snapshots)
        variants = {"fp32": FusedDeepLab(model)}
        for name in args.precisions.split(","):
            dtype = precision.resolve(name)
            variants[name] = FusedDeepLab(model, dtype)
            variants[f"{name} + fp32 head"] = FusedDeepLab(model, dtype, float32_head=True)
        predictors = {k: Predictor(net) for k, net in variants.items()}
        confusion = {k: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for k in predictors}
        agree = {k: 0 for k in predictors}
        pixels = 0
        for image_path, label_path in zip(*read_list(data["root"], data["val"])):
            image, label = read_image(image_path), read_label(label_path)
            predicted = {k: p(image).labels for k, p in predictors.items()}
            pixels += label.size
            for k, labels in predicted.items():
                agree[k] += int((labels == predicted["fp32"]).sum())
                confusion[k] += metrics.confusion_matrix(label, labels, NUM_CLASSES,
                                                         defaults.IGNORE_LABEL)
    print(f"tiny DeepLab trained {args.num_steps} updates on shapes; {args.num_val} validation "
          f"images, {pixels} pixels")
    reference = metrics.scores(confusion["fp32"])["mean_iou"]
    print(f"{'precision':18} {'mean IoU':>9} {'change':>8} {'labels = fp32':>14}")
    for k in predictors:
        miou = metrics.scores(confusion[k])["mean_iou"]
        print(f"{k:18} {miou:9.4f} {miou - reference:+8.4f} {agree[k] / pixels:14.5f}")


if __name__ == "__main__":
    main()
