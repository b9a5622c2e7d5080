"""Training input pipeline alone: images/s of `ImageReader` at VOC image sizes.

Writes a VOC-like set (500x375 RGB JPEGs of smooth random shapes, palette PNG
labels with the VOC palette, some 255 borders) to a temporary folder, then
reads crops of --input-size with train.py's augmentation (--random-scale,
--random-mirror) and the label check on, as the training loop does, and
prints images/s after a warm-up. No network runs: this is the rate at which
the pipeline could feed one or more GPUs.

Usage:
    python benchmarks/bench_pipeline.py [--images 64] [--batches 30] [--batch-size 10]
        [--input-size 321] [--repeats 3]
"""

import argparse
import contextlib
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deeplab_resnet.data.palette import save_label_png
from deeplab_resnet.data.pipeline import ImageReader  # noqa: E402

WIDTH, HEIGHT = 500, 375  # a typical PASCAL VOC image
NUM_CLASSES = 21


def write_voc_like(folder, count, seed=0):
    """`count` JPEG images and palette PNG labels; returns the list file's path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(folder, "SegmentationClass"), exist_ok=True)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    lines = []
    for i in range(count):
        label = np.zeros((HEIGHT, WIDTH), np.uint8)
        image = np.empty((HEIGHT, WIDTH, 3), np.float32)
        image[:] = rng.uniform(0, 255, 3)
        for _ in range(4):
            cy, cx, r = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH), rng.uniform(30, 120)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            label[inside] = rng.integers(1, NUM_CLASSES)
            image[inside] = rng.uniform(0, 255, 3)
        label[:3] = 255  # an ignored border, as VOC's object outlines
        image += rng.normal(0, 8, image.shape)
        stem = f"{i:06d}"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, "JPEGImages", stem + ".jpg"), quality=90)
        save_label_png(label, os.path.join(folder, "SegmentationClass", stem + ".png"))
        lines.append(f"/JPEGImages/{stem}.jpg /SegmentationClass/{stem}.png")
    path = os.path.join(folder, "train.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def measure(reader, batch_size, batches, warmup=5):
    """(images/s, CPU milliseconds per image over all threads: steadier on a busy machine)."""
    with contextlib.closing(reader.batches(batch_size, num_classes=NUM_CLASSES)) as stream:
        for _ in range(warmup):
            next(stream)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            next(stream)
        images = batches * batch_size
        return (images / (time.perf_counter() - start),
                1000 * (time.process_time() - cpu) / images)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--input-size", type=int, default=321)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_list = write_voc_like(folder, args.images)
        reader = ImageReader(folder, data_list, (args.input_size, args.input_size),
                             random_scale=True, random_mirror=True)
        rates, cpu = zip(*(measure(reader, args.batch_size, args.batches)
                           for _ in range(args.repeats)))
    print(f"pipeline alone: {WIDTH}x{HEIGHT} JPEG + palette PNG -> {args.input_size}^2 crops, "
          f"random scale and mirror, label check; batch {args.batch_size}, {os.cpu_count()} "
          f"CPU(s): {np.median(rates):.1f} images/s (median of {args.repeats}; "
          f"{', '.join(f'{r:.1f}' for r in rates)}), {np.median(cpu):.1f} CPU ms per image")


if __name__ == "__main__":
    main()
