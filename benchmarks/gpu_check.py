"""First run on a GPU: print what this project decided and measured on this machine.

Runs on a CPU too (the figures then describe the CPU). Prints:

- the devices line every command prints, and TF32's state (TensorFlow's default, then the
  commands' default after `devices.use_tf32(False)`);
- the precision chosen for --precision bf16/fp16 and --mixed-precision bf16/fp16;
- the gradient path of dilated convolutions (native on a GPU, space_to_batch on a CPU);
- images/s of a training update (train.py's step, frozen BatchNorm) and of inference (the
  BN-folded network, the full protocol, labels only);
- exactness: logits and weight gradients on the default device (TF32 off, then on) against
  a float32 reference computed on the CPU with the same weights and images.

Usage:
    python benchmarks/gpu_check.py [--model resnet101] [--size 321] [--batch-size 2] [--steps 5]
    python benchmarks/gpu_check.py --model tiny     # a quick look on a CPU
"""

import argparse
import logging
import os
import sys
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from deeplab_resnet.runtime import devices  # noqa: E402
from deeplab_resnet.model import layers
from deeplab_resnet.runtime import precision
from deeplab_resnet.model.network import DeepLabResNet, preprocess  # noqa: E402
from deeplab_resnet.predict.prediction import make_predictor  # noqa: E402
from deeplab_resnet.training import losses, optim, step  # noqa: E402

NUM_CLASSES = 21


def decisions():
    default_tf32 = devices.tf32_enabled()
    devices.use_tf32(False)
    print(devices.describe())
    print(f"TF32: TensorFlow's default {'on' if default_tf32 else 'off'}; the commands' "
          f"default (devices.use_tf32(False)) {'on' if devices.tf32_enabled() else 'off'}")
    hardware = precision.detect()
    for name in ("bf16", "fp16"):
        chosen = precision.NAMES[precision.resolve(name, hardware)]
        print(f"--precision {name}: inference and training compute in {chosen} "
              f"(decided from the {hardware.describe()})")
    native = layers.native_dilated_gradient(tf.zeros([1]))
    print("dilated convolution gradient: " + ("native (cuDNN/XLA)" if native
                                              else "space_to_batch kernel gradient (CPU)"))


def batch(size, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch_size, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, (batch_size, size, size)).astype(np.int32)
    return preprocess(images).numpy(), labels


def training_rate(model_name, size, batch_size, steps):
    model = DeepLabResNet(model_name, NUM_CLASSES, seed=0)
    params = optim.sgd_params(model)
    trainer = step.Trainer(losses.Objective(model, 255), optim.CaffeSGD(params),
                           {k: p[0] for k, p in params.items()})
    images, labels = batch(size, batch_size)
    trainer.step(images[None], labels[None], 1e-9)  # trace and warm up
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(images[None], labels[None], 1e-9)
    return steps * batch_size / (time.perf_counter() - start)


def inference_rate(model_name, size, steps):
    predictor = make_predictor(DeepLabResNet(model_name, NUM_CLASSES, seed=0))
    image = np.random.default_rng(1).integers(0, 256, (size, size, 3), np.uint8)
    predictor.predict_labels(image)
    start = time.perf_counter()
    for _ in range(steps):
        predictor.predict_labels(image)
    return steps / (time.perf_counter() - start)


def logits_and_gradients(model, images, labels):
    with tf.GradientTape() as tape:
        logits = model(tf.constant(images))
        loss = losses.Objective(model, 255)(tf.constant(images), tf.constant(labels))[0]
    weights = model.params["conv1/weights"]
    return logits.numpy(), tape.gradient(loss, weights).numpy()


def relative(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def exactness(model_name, size):
    model = DeepLabResNet(model_name, NUM_CLASSES, seed=0)
    images, labels = batch(size, 1, seed=2)
    with tf.device("/CPU:0"):
        reference = logits_and_gradients(model, images, labels)
    for tf32 in (False, True):
        devices.use_tf32(tf32)
        logits, grads = logits_and_gradients(model, images, labels)
        state = "on " if tf32 else "off"
        print(f"exactness, TF32 {state}: logits {relative(logits, reference[0]):.1e}, "
              f"conv1 weight gradient {relative(grads, reference[1]):.1e} (max relative "
              f"difference to float32 on the CPU)")
    devices.use_tf32(False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet101")
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    decisions()
    rate = training_rate(args.model, args.size, args.batch_size, args.steps)
    print(f"training: {rate:.2f} images/s ({args.model}, {args.size}^2 crops, batch "
          f"{args.batch_size}, float32, frozen BatchNorm)")
    rate = inference_rate(args.model, args.size, args.steps)
    print(f"inference: {rate:.2f} images/s ({args.model}, {args.size}^2 image, float32, "
          "labels only)")
    exactness(args.model, args.size)


if __name__ == "__main__":
    main()
