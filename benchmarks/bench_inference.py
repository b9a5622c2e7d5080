"""CPU inference benchmark: DeepLab-ResNet against OpenCV DNN and PyTorch in the same run.

Every engine runs the same network with the same random weights, one image at a
time, in its own child process (so peak RSS is that engine's alone). Each child
warms up, then times `--repeats` forward passes and reports the median seconds
per image and its peak RSS. The parent prints a table and the ratios of
this project's time to each peer's.

Engines:
    tf        this project, BN folded into the convolutions (deeplab_resnet.fused)
    tf-plain  this project, the training network (BatchNorm as separate ops)
    opencv    cv2.dnn.readNetFromCaffe on the generated deploy prototxt + caffemodel
    torch     a PyTorch DeepLab-v2 of the same geometry (skipped when torch is absent)

Usage (with the package installed, `pip install -e .`):
    python benchmarks/bench_inference.py [--sizes 321,513] [--repeats 3] [--threads 2]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from deeplab_resnet import defaults


def peak_rss_mb():
    """This process's peak resident set size.

    /proc's VmHWM starts afresh at exec; getrusage's ru_maxrss would carry the
    parent's peak over into the child, so it is only the fallback.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, repeats):
    fn()  # warm-up: tracing, kernel selection, allocation
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_tf(args, fused):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from deeplab_resnet import checkpoint
    from deeplab_resnet.fused import FusedDeepLab
    from deeplab_resnet.model import DeepLabResNet
    model = DeepLabResNet(args.model, args.num_classes)
    checkpoint.assign_params(model, dict(np.load(args.weights, allow_pickle=False)))
    net = FusedDeepLab(model) if fused else model
    forward = tf.function(lambda x: net(x))
    x = tf.constant(np.load(args.input, allow_pickle=False))
    seconds = timed(lambda: forward(x).numpy(), args.repeats)
    return seconds, forward(x).numpy()


def run_opencv(args):
    import cv2
    cv2.setNumThreads(args.threads)
    net = cv2.dnn.readNetFromCaffe(args.prototxt, args.caffemodel)
    x = np.load(args.input, allow_pickle=False).transpose(0, 3, 1, 2).copy()

    def forward():
        net.setInput(x)
        return net.forward()

    seconds = timed(forward, args.repeats)
    return seconds, forward().transpose(0, 2, 3, 1)


def run_torch(args):
    import torch
    from torch import nn
    from deeplab_resnet.arch import architecture
    torch.set_num_threads(args.threads)
    weights = dict(np.load(args.weights, allow_pickle=False))
    arch = architecture(args.model, args.num_classes)

    def conv_bn(conv):
        layer = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel, conv.stride,
                          conv.pad, conv.dilation, bias=conv.bias)
        layer.weight.data = torch.from_numpy(weights[conv.weights].transpose(3, 2, 0, 1).copy())
        if conv.bias:
            layer.bias.data = torch.from_numpy(weights[conv.biases])
        parts = [layer]
        if conv.bn:
            bn = nn.BatchNorm2d(conv.out_channels, eps=defaults.BN_EPS)
            bn.running_mean.data = torch.from_numpy(weights[conv.bn_param("mean")])
            bn.running_var.data = torch.from_numpy(weights[conv.bn_param("variance")])
            bn.weight.data = torch.from_numpy(weights[conv.bn_param("scale")])
            bn.bias.data = torch.from_numpy(weights[conv.bn_param("offset")])
            parts.append(bn)
        if conv.relu:
            parts.append(nn.ReLU(inplace=True))
        return nn.Sequential(*parts)

    class Bottleneck(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.branch1 = conv_bn(block.branch1) if block.branch1 else None
            self.branch2 = nn.Sequential(*[conv_bn(c) for c in block.branch2])

        def forward(self, x):
            shortcut = x if self.branch1 is None else self.branch1(x)
            return torch.relu(self.branch2(x) + shortcut)

    class DeepLab(nn.Module):
        def __init__(self):
            super().__init__()
            pool = arch.pool
            self.stem = nn.Sequential(conv_bn(arch.stem), nn.MaxPool2d(
                pool.kernel, pool.stride, pool.pad, ceil_mode=True))
            self.blocks = nn.Sequential(*[Bottleneck(b) for b in arch.blocks])
            self.head = nn.ModuleList([conv_bn(c) for c in arch.head])

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return sum(h(x) for h in self.head)

    net = DeepLab().eval()
    x = torch.from_numpy(np.load(args.input, allow_pickle=False).transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
        seconds = timed(lambda: net(x), args.repeats)
        out = net(x).numpy().transpose(0, 2, 3, 1)
    return seconds, out


def child(args):
    runners = {"tf": lambda: run_tf(args, fused=True), "tf-plain": lambda: run_tf(args, fused=False),
               "opencv": lambda: run_opencv(args), "torch": lambda: run_torch(args)}
    seconds, out = runners[args.engine]()
    np.save(args.output, out.astype(np.float32), allow_pickle=False)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def write_models(workdir, model_name, num_classes, seed):
    """Random-weight network as .npz (for TF/torch) and deploy prototxt + caffemodel (OpenCV)."""
    from deeplab_resnet import caffe
    from deeplab_resnet.model import DeepLabResNet
    model = DeepLabResNet(model_name, num_classes, seed=seed)
    rng = np.random.default_rng(seed)
    for name, var in model.params.items():
        n = var.shape[-1]
        if name.endswith("/variance"):
            var.assign(rng.uniform(1.0, 4.0, n).astype(np.float32))
        elif name.endswith(("/mean", "/offset", "/biases")):
            var.assign(rng.normal(0.0, 0.1, n).astype(np.float32))
    params = {k: v.numpy() for k, v in model.params.items()}
    weights = os.path.join(workdir, "weights.npz")
    np.savez(weights, **params)
    prototxt = os.path.join(workdir, "deploy.prototxt")
    with open(prototxt, "w") as f:
        f.write(caffe.deploy_prototxt(model_name, num_classes))
    caffemodel = os.path.join(workdir, "random.caffemodel")
    caffe.write_caffemodel(prototxt, params, caffemodel)
    return weights, prototxt, caffemodel


def available(engine):
    module = {"opencv": "cv2", "torch": "torch"}.get(engine)
    if module is None:
        return True
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def parent(args):
    engines = [e for e in args.engines.split(",") if available(e)]
    skipped = [e for e in args.engines.split(",") if e not in engines]
    with tempfile.TemporaryDirectory() as workdir:
        weights, prototxt, caffemodel = write_models(workdir, args.model, args.num_classes, args.seed)
        results = {}
        for size in args.sizes:
            image = np.random.default_rng(size).uniform(-120, 130, (1, size, size, 3)).astype(np.float32)
            input_path = os.path.join(workdir, f"input{size}.npy")
            np.save(input_path, image, allow_pickle=False)
            outputs = {}
            for engine in engines:
                out_path = os.path.join(workdir, f"{engine}{size}.npy")
                cmd = [sys.executable, __file__, "--child", "--engine", engine, "--input", input_path,
                       "--output", out_path, "--weights", weights, "--prototxt", prototxt,
                       "--caffemodel", caffemodel, "--model", args.model,
                       "--num-classes", str(args.num_classes), "--repeats", str(args.repeats),
                       "--threads", str(args.threads)]
                env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS=str(args.threads))
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    print(f"{engine} at {size}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                    continue
                results[(engine, size)] = json.loads(done.stdout.strip().splitlines()[-1])
                outputs[engine] = np.load(out_path, allow_pickle=False)
            reference = outputs.get("tf")
            for engine, out in outputs.items():
                if reference is not None and out.shape == reference.shape:
                    rel = np.abs(out - reference).max() / np.abs(reference).max()
                    results[(engine, size)]["max_rel_diff_vs_tf"] = float(rel)
    report(args, engines, skipped, results)


def report(args, engines, skipped, results):
    print(f"DeepLab {args.model}, {args.num_classes} classes, batch 1, {args.threads} threads, "
          f"median of {args.repeats} after 2 warm-up runs")
    print(f"{'engine':10} {'size':>5} {'s/image':>9} {'peak RSS MB':>12} {'max rel diff vs tf':>19}")
    for size in args.sizes:
        for engine in engines:
            r = results.get((engine, size))
            if r:
                diff = r.get("max_rel_diff_vs_tf", float("nan"))
                print(f"{engine:10} {size:5d} {r['seconds']:9.3f} {r['peak_rss_mb']:12.0f} {diff:19.2e}")
    for size in args.sizes:
        ours = results.get(("tf", size))
        for peer in engines:
            if peer != "tf" and ours and (peer, size) in results:
                ratio = ours["seconds"] / results[(peer, size)]["seconds"]
                print(f"ratio tf / {peer} at {size}: {ratio:.2f}")
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="321,513", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", default=defaults.VARIANT)
    parser.add_argument("--num-classes", type=int, default=defaults.NUM_CLASSES)
    parser.add_argument("--engines", default="tf,tf-plain,opencv,torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for flag in ("--engine", "--input", "--output", "--weights", "--prototxt", "--caffemodel"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
