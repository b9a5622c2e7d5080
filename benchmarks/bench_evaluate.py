"""Evaluation throughput: evaluate.py's loop against the network alone (issue 20, item 5).

Writes `--images` random VOC-sized images (JPEG, 500x375 by default) and label PNGs,
builds a predictor of a random-weight network (BN folded, as evaluate.py runs it),
warms it up on one image, then times, in turn, `--rounds` times:

    network only     `Predictor.labels` on images already decoded in memory (the
                     probabilities stay on the device, the labels come back): the
                     time below which evaluation cannot go
    evaluate         `evaluation.evaluate` over the list, saving label PNGs: decoding,
                     label checks, the network, the CRF (--crf), confusion counting and
                     PNG writing, overlapped as evaluate.py runs them
    one at a time    the same work in a plain loop, each step after the other (what
                     evaluation did before the stages overlapped)

and prints images/s of each and evaluate's time per image against the network's
(the issue's target: within 10%). With --crf the network-only figure is the network
without the CRF, which evaluate then runs beside the network.

Usage:
    python benchmarks/bench_evaluate.py [--model resnet101] [--images 6] [--size 500x375]
        [--rounds 2] [--crf]
"""

import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def write_pairs(folder, count, width, height, num_classes):
    """[(image path, label path)] of random JPEG images and label PNGs."""
    from PIL import Image
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(count):
        image, label = os.path.join(folder, f"img{i}.jpg"), os.path.join(folder, f"lab{i}.png")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).save(image,
                                                                                quality=90)
        Image.fromarray(rng.integers(0, num_classes, (height, width), np.uint8)).save(label)
        pairs.append((image, label))
    return pairs


def one_at_a_time(predictor, pairs, num_classes, save_dir):
    """Evaluation without overlap: read, predict, count, save, one image after the other."""
    from deeplab_resnet.data.images import read_image
    from deeplab_resnet.data.labels import read_label
    from deeplab_resnet.data.palette import save_label_png
    from deeplab_resnet.predict import metrics
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for image_path, label_path in pairs:
        image, label = read_image(image_path), read_label(label_path)
        predicted = predictor.predict_labels(image)
        confusion += metrics.confusion_matrix(label, predicted, num_classes, 255)
        stem = os.path.splitext(os.path.basename(image_path))[0]
        save_label_png(predicted, os.path.join(save_dir, stem + ".png"))
    return confusion


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet101")
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of the images")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--crf", action="store_true", help="with the dense CRF (pydensecrf2)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    import deeplab_resnet
    from deeplab_resnet.predict import evaluation
    from deeplab_resnet.predict.config import PredictConfig
    from deeplab_resnet.predict.prediction import make_predictor
    from deeplab_resnet.data.images import read_image
    from deeplab_resnet.model.network import DeepLabResNet
    width, height = (int(v) for v in args.size.split("x"))
    print(f"package: {os.path.dirname(deeplab_resnet.__file__)}; {args.model}, {args.images} "
          f"images of {width}x{height}{', CRF' if args.crf else ''}; load average "
          f"{os.getloadavg()[0]:.1f} at start")
    predictor = make_predictor(DeepLabResNet(args.model, args.num_classes),
                               PredictConfig(crf=args.crf))
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as folder:
        pairs = write_pairs(folder, args.images, width, height, args.num_classes)
        images = [read_image(image) for image, _ in pairs]
        predictor.predict_labels(images[0])  # trace and first run
        runs = {"network only": lambda: [predictor.labels(tf.constant(i)).numpy()
                                         for i in images],
                "evaluate": lambda: evaluation.evaluate(predictor, pairs, args.num_classes,
                                                        save_dirs=[folder]),
                "one at a time": lambda: one_at_a_time(predictor, pairs, args.num_classes,
                                                       folder)}
        times = {label: [] for label in runs}
        for _ in range(args.rounds):
            for label, run in runs.items():
                start = time.perf_counter()
                run()
                times[label].append((time.perf_counter() - start) / len(pairs))
        network = statistics.median(times["network only"])
        for label, per_image in times.items():
            median = statistics.median(per_image)
            print(f"{label:14s} {1 / median:6.3f} images/s, {median:6.2f} s per image "
                  f"({median / network:5.2f}x the network; rounds: "
                  f"{', '.join(f'{t:.2f}' for t in per_image)} s)")
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
