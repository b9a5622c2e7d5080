"""First run on a GPU: print what this project decided and measured on this machine.

Runs on a CPU too (the figures then describe the CPU). Prints:

- the devices line every command prints, and TF32's state (TensorFlow's default, then the
  commands' default after `devices.use_tf32(False)`);
- the precision chosen for --precision bf16/fp16 and --mixed-precision bf16/fp16;
- the gradient path of dilated convolutions (native on a GPU, space_to_batch on a CPU);
- images/s of a training update (train.py's step, frozen BatchNorm) and of inference (the
  BN-folded network, the full protocol, labels only);
- exactness: logits and weight gradients on the default device (TF32 off, then on) against
  a float32 reference computed on the CPU with the same weights and images;
- what issue 28 changed: TF32 as `Segmenter.load`/`train` leave it, whether fp16 training
  scales its loss and whether export takes bf16/fp16 here (the precision that runs after
  any fallback), the training update's images/s in fp32, bf16 and fp16, updates/s reading
  the statistics back every update against every 10 (`--log-every`: the device should not
  wait for the host), and, with two or more GPUs (or DEEPLAB_LOGICAL_CPUS=2), `--strategy
  mirrored` training against one device with the same global batch (tiny model, synchronised
  BatchNorm, --grad-update-every 2): a collective all-reduce that pairs its sums wrongly
  fails here ("Shape mismatch in the collective instance", seen on logical CPUs).

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


def training_rate(model_name, size, batch_size, steps, dtype=tf.float32, read_every=1):
    """images/s of training updates computing in `dtype`, the statistics read back every
    `read_every` updates (one read for them all, as the loop does)."""
    model = DeepLabResNet(model_name, NUM_CLASSES, seed=0)
    params = optim.sgd_params(model)
    scale = step.LossScale() if dtype == tf.float16 else None
    trainer = step.Trainer(losses.Objective(model, 255, compute_dtype=dtype),
                           optim.CaffeSGD(params), {k: p[0] for k, p in params.items()},
                           loss_scale=scale)
    images, labels = batch(size, batch_size)
    trainer.step(images[None], labels[None], 1e-9).read()  # trace and warm up
    start, waiting = time.perf_counter(), []
    for _ in range(steps):
        waiting.append(trainer.step(images[None], labels[None], 1e-9))
        if len(waiting) >= read_every:
            step.read_all(waiting)
            waiting = []
    step.read_all(waiting)
    return steps * batch_size / (time.perf_counter() - start)


def precision_decisions():
    """TF32 as the library leaves it, and what bf16/fp16 training and export do here."""
    from deeplab_resnet.predict.config import PredictConfig
    from deeplab_resnet.predict.export import check_precision
    from deeplab_resnet.training import TrainConfig
    print(f"TF32 by default: Segmenter.load tf32={PredictConfig().tf32}, train "
          f"tf32={TrainConfig().tf32} (process-wide, as the commands without --tf32)")
    for name in ("bf16", "fp16"):
        runs = precision.NAMES[precision.resolve(name)]
        scaling = "with loss scaling" if runs == "fp16" else "without loss scaling"
        try:
            check_precision(name)
            exported = f"export computes in {name}"
        except Exception as exc:  # noqa: BLE001 - the refusal is the finding
            exported = f"export refused: {exc}"
        print(f"--precision {name}: training computes in {runs} ({scaling}); {exported}")


def replicas_check(tmp):
    """--strategy mirrored on every local GPU (or logical CPU) against one device."""
    from deeplab_resnet import training
    from deeplab_resnet.cli import train_flags
    from deeplab_resnet.data import shapes
    from deeplab_resnet.runtime import distribute
    from deeplab_resnet.weights import checkpoint
    replicas = distribute.make_strategy("mirrored").num_replicas_in_sync
    if replicas < 2:
        print("replicas: one device (give two GPUs, or DEEPLAB_LOGICAL_CPUS=2)")
        return
    data = shapes.make_shapes_dataset(os.path.join(tmp, "data"), num_train=8, num_val=1)
    params = {}
    for strategy, batch_size in (("default", replicas), ("mirrored", 1)):
        argv = ["--model", "tiny", "--num-classes", str(len(shapes.CLASSES)), "--data-dir",
                data["root"], "--data-list", data["train"], "--input-size", "40,40",
                "--batch-size", str(batch_size), "--grad-update-every", "2", "--is-training",
                "--num-steps", "2", "--learning-rate", "1e-4", "--save-num-images", "0",
                "--snapshot-dir", os.path.join(tmp, strategy), "--strategy", strategy]
        train_flags.main(training.TRAIN, argv)
        params[strategy] = checkpoint.read_params(os.path.join(tmp, strategy, "model.ckpt-2"))
    worst = max(relative(params["mirrored"][k], v) for k, v in params["default"].items())
    print(f"replicas: --strategy mirrored on {replicas} replicas against one device, same "
          f"global batch: weights differ by {worst:.1e} at most (relative; expect ~1e-6)")


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
    devices.use_logical_cpus()  # DEEPLAB_LOGICAL_CPUS=2: rehearse two replicas on a CPU
    decisions()
    rate = training_rate(args.model, args.size, args.batch_size, args.steps)
    print(f"training: {rate:.2f} images/s ({args.model}, {args.size}^2 crops, batch "
          f"{args.batch_size}, float32, frozen BatchNorm)")
    rate = inference_rate(args.model, args.size, args.steps)
    print(f"inference: {rate:.2f} images/s ({args.model}, {args.size}^2 image, float32, "
          "labels only)")
    exactness(args.model, args.size)
    precision_decisions()
    for name in ("bf16", "fp16"):
        dtype = precision.resolve(name)
        if dtype != tf.float32:
            rate = training_rate(args.model, args.size, args.batch_size, args.steps, dtype)
            print(f"training in {name}: {rate:.2f} images/s")
    every = [training_rate(args.model, args.size, args.batch_size, 2 * args.steps,
                           read_every=n) for n in (1, 10)]
    print(f"training, statistics read every update: {every[0]:.2f} images/s; every 10 "
          f"updates (--log-every 10): {every[1]:.2f} images/s")
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        replicas_check(tmp)


if __name__ == "__main__":
    main()
