"""CPU training-update benchmark: DeepLab-ResNet's train step against PyTorch's, same run.

One update = forward, softmax cross-entropy at logit resolution (labels resized
by nearest neighbour, 255 ignored), backward, SGD with momentum 0.9 and weight
decay 5e-4 on the convolution weights, DeepLab's learning-rate multipliers
(head weights 10x, head biases 20x), BatchNorm frozen (the default of
train.py). Every engine holds the same random weights and trains on the same
random batch, in its own child process; after warm-up the engines take turns,
one timed update each per round (`engines.alternate`). The table shows the
median seconds per update and each process's peak RSS.

Engines:
    tf           this project's `training.Trainer` (train.py's step), frozen BatchNorm
                 folded into the convolutions inside the step
    tf-bf16      the same computing in bfloat16 (`--precision bf16`: float32 weights,
                 logits and loss; emulated, slow, on CPUs without AVX512-BF16/AMX)
    tf-unfolded  the same with BatchNorm as separate operations (`fold_bn=False`)
    tf-previous  the step before issue 13: BatchNorm as separate operations and every
                 dilated convolution through space_to_batch, forward and backward
    torch        a PyTorch DeepLab-v2 of the same geometry, BatchNorm in eval mode
                 with its scale/offset frozen, torch.optim.SGD (skipped when torch
                 is absent, like every torch engine)
    torch-cl     the same in channels_last (NHWC) memory format
    torch-compile  the network under torch.compile (inductor), channels_last
    torch-bf16, torch-cl-bf16, torch-compile-bf16
                 the three above under torch.autocast("cpu", bfloat16) (emulated,
                 slow, on CPUs without AVX512-BF16/AMX)

Usage:
    python benchmarks/bench_train.py [--size 321] [--batch-size 2] [--repeats 5] [--threads 2]
"""

import argparse
import os
import sys
import tempfile

import numpy as np


from bench_inference import available, write_models
from engines import TORCH_ENGINES, alternate, serve, torch_deeplab, torch_variant

from deeplab_resnet import defaults

LEARNING_RATE = 2.5e-4
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
IGNORE_LABEL = defaults.IGNORE_LABEL


def batch(args):
    rng = np.random.default_rng(args.seed)
    shape = (args.batch_size, args.size, args.size)
    images = rng.uniform(-120, 130, shape + (3,)).astype(np.float32)
    labels = rng.integers(0, args.num_classes, shape).astype(np.int32)
    labels[rng.uniform(size=shape) < 0.05] = IGNORE_LABEL
    return images, labels


def tf_engine(args):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from deeplab_resnet.weights import checkpoint
    from deeplab_resnet.model import layers
    from deeplab_resnet.training import losses, optim, step
    from deeplab_resnet.model.network import DeepLabResNet
    if args.engine == "tf-previous":
        def space_to_batch_conv(x, weights, rate, ph, pw):
            x = tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
            return tf.nn.atrous_conv2d(x, weights, rate, "VALID")
        layers._dilated_conv = space_to_batch_conv
    model = DeepLabResNet(args.model, args.num_classes,
                          fold_bn=args.engine in ("tf", "tf-bf16"))
    checkpoint.assign_params(model, dict(np.load(args.weights, allow_pickle=False)))
    optimizer = optim.CaffeSGD(optim.sgd_params(model), MOMENTUM, WEIGHT_DECAY)
    variables = {k: v for k, v in model.params.items() if v.trainable}
    dtype = tf.bfloat16 if args.engine == "tf-bf16" else tf.float32
    trainer = step.Trainer(losses.Objective(model, IGNORE_LABEL, compute_dtype=dtype),
                           optimizer, variables)
    images, labels = (tf.constant(t[None]) for t in batch(args))  # one micro-batch
    # .read(): wait for the update, as the loop does (the step itself does not)
    return lambda: trainer.step(images, labels, LEARNING_RATE).read()


def torch_engine(args):
    import torch
    import torch.nn.functional as F

    from deeplab_resnet.model.arch import architecture
    torch.set_num_threads(args.threads)
    arch = architecture(args.model, args.num_classes)
    net = torch_deeplab(dict(np.load(args.weights, allow_pickle=False)), arch).eval()
    groups = {"backbone": [], "head_weights": [], "head_biases": []}
    head_modules = {id(m) for m in net.head.modules()}
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.requires_grad_(False)
            module.bias.requires_grad_(False)
        elif isinstance(module, torch.nn.Conv2d):
            head = id(module) in head_modules
            groups["head_weights" if head else "backbone"].append(module.weight)
            if module.bias is not None:
                groups["head_biases"].append(module.bias)
    optimizer = torch.optim.SGD([
        {"params": groups["backbone"], "lr": LEARNING_RATE, "weight_decay": WEIGHT_DECAY},
        {"params": groups["head_weights"], "lr": 10 * LEARNING_RATE,
         "weight_decay": WEIGHT_DECAY},
        {"params": groups["head_biases"], "lr": 20 * LEARNING_RATE, "weight_decay": 0.0},
    ], lr=LEARNING_RATE, momentum=MOMENTUM)
    images, labels = batch(args)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    target = torch.from_numpy(labels.astype(np.int64))
    wrap, model, x = torch_variant(args.engine, net, x, inference=False)

    def loss():
        logits = model(x)
        small = F.interpolate(target[:, None].float(), size=logits.shape[2:],
                              mode="nearest")[:, 0].long()
        return F.cross_entropy(logits.float(), small, ignore_index=IGNORE_LABEL)

    def update():
        optimizer.zero_grad(set_to_none=True)
        value = wrap(loss)
        value.backward()
        optimizer.step()
        return float(value)
    return update


def child(args):
    update = torch_engine(args) if args.engine in TORCH_ENGINES else tf_engine(args)
    serve(update)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", default=defaults.VARIANT)
    parser.add_argument("--num-classes", type=int, default=defaults.NUM_CLASSES)
    parser.add_argument("--engines", default="tf,tf-unfolded,tf-previous,torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    engines = [e for e in args.engines.split(",") if available(e)]
    skipped = [e for e in args.engines.split(",") if e not in engines]
    with tempfile.TemporaryDirectory() as workdir:
        weights, _, _ = write_models(workdir, args.model, args.num_classes, args.seed)
        common = ["--weights", weights, "--model", args.model, "--num-classes",
                  str(args.num_classes), "--size", str(args.size), "--batch-size",
                  str(args.batch_size), "--threads", str(args.threads), "--seed", str(args.seed)]
        commands = {e: [sys.executable, __file__, "--child", "--engine", e] + common
                    for e in engines}
        results, failed = alternate(commands, args.repeats, args.threads)
    for engine, error in failed.items():
        print(f"{engine}: failed\n{error}", file=sys.stderr)
    print(f"DeepLab {args.model} training update, {args.size}x{args.size}, batch "
          f"{args.batch_size}, frozen BatchNorm, {args.threads} threads, median of "
          f"{args.repeats} updates after 2 warm-up updates, engines taking turns")
    print(f"{'engine':19} {'s/update':>9} {'peak RSS MB':>12}  all updates (s)")
    for engine in engines:
        if engine in results:
            r = results[engine]
            print(f"{engine:19} {r['seconds']:9.3f} {r['peak_rss_mb']:12.0f}  "
                  + " ".join(f"{t:.2f}" for t in r["times"]))
    pairs = [("tf", peer) for peer in ("tf-unfolded", "tf-previous") + tuple(TORCH_ENGINES)]
    pairs += [("tf-bf16", peer) for peer in ("tf", "torch-bf16", "torch-cl-bf16")]
    for ours, peer in pairs + [("tf-previous", "torch")]:
        if ours in results and peer in results:
            print(f"ratio {ours} / {peer}: "
                  f"{results[ours]['seconds'] / results[peer]['seconds']:.2f}")
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")


if __name__ == "__main__":
    main()
