"""Where the time goes: per-operation-type totals of inference and of the training update.

Runs the same engines as bench_inference.py (`tf`: the BN-folded network
inference.py uses) and bench_train.py (`tf`: train.py's update), warms them
up, then records `--runs` runs with the TensorFlow profiler and adds up the
duration of every TensorFlow op the executor ran, by op type and by
category (convolution arithmetic, padding/slicing copies, casts, resizes,
space_to_batch, ...). Ops run one after another (one inter-op thread, each op
using the intra-op threads), so the op times add up to the run's wall time;
what is left is executor and Python overhead.

With --layers, each distinct convolution of inference is also timed alone
(GFLOP/s per layer shape): where the convolution time goes.

With --onednn-verbose the same work runs once more in a child process with
ONEDNN_VERBOSE=1, and the oneDNN primitives it executes are counted by kind
(convolution, reorder, matmul/gemm, ...) with their total time.

The fraction of peak is the network's multiply-add arithmetic (2 FLOP per
multiply-add, counted from the architecture) over the wall time, against
the cores' fp32 peak: cores x clock x FLOP per cycle, where FLOP per cycle
is 2 (fused multiply-add) x SIMD lanes (8 with AVX2, 16 with AVX-512) x 2
FMA units. The clock is the one /proc/cpuinfo shows (boost not counted).

Usage:
    python benchmarks/profile_ops.py [--work inference,train] [--size 513]
        [--train-size 321] [--batch-size 2] [--runs 2] [--threads 2] [--onednn-verbose]
        [--layers]
"""

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench_inference import write_models

from deeplab_resnet import defaults

# op type -> category; anything else is "other".
CATEGORIES = {
    "convolution": ("_FusedConv2D", "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter",
                    "_MklNativeFusedConv2D", "_MklNativeConv2D", "_MklFusedConv2D",
                    "_MklNativeConv2DBackpropInput", "_MklNativeConv2DBackpropFilter",
                    "_MklNativeConv2DWithBias", "_MklNativeConv2DBackpropFilterWithBias"),
    "space_to_batch / batch_to_space": ("SpaceToBatchND", "BatchToSpaceND"),
    "pad / slice / concat copies": ("Pad", "PadV2", "MirrorPad", "StridedSlice", "Slice",
                                    "StridedSliceGrad", "ConcatV2", "Split", "Reverse",
                                    "ReverseV2", "Tile", "Pack"),
    "layout transposes": ("Transpose", "ConjugateTranspose", "_MklToTf", "_MklNativeTranspose"),
    "casts": ("Cast",),
    "resizes": ("ResizeBilinear", "ResizeBilinearGrad", "ResizeNearestNeighbor",
                "ResizeNearestNeighborGrad"),
    "bias / ReLU / add (elementwise)": ("BiasAdd", "BiasAddGrad", "Relu", "ReluGrad", "AddV2",
                                        "AddN", "Mul", "Sub", "RealDiv", "Rsqrt", "Neg",
                                        "Maximum", "Square", "_FusedBatchNormEx",
                                        "_MklNativeFusedBatchNorm"),
    "pooling": ("MaxPool", "MaxPoolGrad", "_MklNativeMaxPool", "_MklNativeMaxPoolGrad"),
    "optimizer (variable updates)": ("ResourceApplyMomentum", "ResourceApplyKerasMomentum",
                                     "AssignVariableOp", "AssignAddVariableOp",
                                     "AssignSubVariableOp", "ReadVariableOp"),
    "loss (softmax, reductions, gathers)": ("SparseSoftmaxCrossEntropyWithLogits", "Softmax",
                                            "LogSoftmax", "Sum", "Mean", "Max", "GatherV2",
                                            "GatherNd", "SelectV2", "OneHot", "Select",
                                            "Equal", "Less", "LogicalAnd", "NotEqual"),
}
CATEGORY_OF = {op: name for name, ops in CATEGORIES.items() for op in ops}
# Events that only wrap other ops (a function call): their time is counted inside.
WRAPPERS = ("PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If",
            "StatelessIf", "Identity", "IdentityN", "NoOp")
OP_EVENT = re.compile(r"^[^ :]+:(?P<type>[A-Za-z_][A-Za-z0-9_]*)$")


def fp32_peak_gflops(cores=None, cpuinfo="/proc/cpuinfo"):
    """(peak GFLOP/s, how it was computed) for fp32 FMA on `cores` cores of this CPU."""
    cores = cores or len(os.sched_getaffinity(0))
    mhz, flags = 0.0, set()
    with open(cpuinfo) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "cpu MHz" and not mhz:
                mhz = float(value)
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    per_cycle = 2 * lanes * (2 if "fma" in flags else 1)
    peak = cores * mhz / 1000.0 * per_cycle
    return peak, f"{cores} cores x {mhz / 1000:.3f} GHz x {per_cycle} FLOP/cycle"


def conv_gflop(model, num_classes, size, batch=1, training=False):
    """Multiply-add arithmetic of the network's convolutions (GFLOP, 2 per multiply-add).

    With `training`, each convolution also computes its kernel gradient and
    (all but the first, whose input needs none) its input gradient, each of
    the forward pass's size.
    """
    from deeplab_resnet.model import arch as arch_lib
    from deeplab_resnet.model import layers
    arch = arch_lib.architecture(model, num_classes)
    total = []

    def conv(side, c):
        out = layers.conv_output_size(side, c.kernel, c.stride, c.pad, c.dilation)
        forward = 2.0 * batch * out * out * c.kernel ** 2 * c.in_channels * c.out_channels
        total.append(forward * ((2 if c is arch.stem else 3) if training else 1))
        return out

    def pool(side, p):
        return layers.pool_output_size(side, p.kernel, p.stride, p.pad)

    arch_lib.run(arch, size, conv, pool, join=lambda block, shortcut, branch: branch,
                 join_head=lambda outputs: outputs[0])
    return sum(total) / 1e9


def build(args, work, workdir, weights):
    """The callable of one run of `work` ("inference" or "train"), warmed up."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    common = dict(weights=weights, model=args.model, num_classes=args.num_classes,
                  threads=args.threads, engine="tf", seed=0)
    if work == "inference":
        import bench_inference
        image = np.random.default_rng(args.size).uniform(-120, 130, (1, args.size, args.size, 3))
        path = os.path.join(workdir, "input.npy")
        np.save(path, image.astype(np.float32), allow_pickle=False)
        run = bench_inference.tf_engine(argparse.Namespace(input=path, **common))
    else:
        import bench_train
        run = bench_train.tf_engine(argparse.Namespace(size=args.train_size,
                                                       batch_size=args.batch_size, **common))
    for _ in range(2):
        run()
    return run


def op_totals(logdir):
    """{op type: (count, seconds)} of the TensorFlow ops in a profiler trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    totals = collections.defaultdict(lambda: [0, 0.0])
    for path in glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            for line in plane.lines:
                for event in line.events:
                    match = OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                    if match and match["type"] not in WRAPPERS:
                        totals[match["type"]][0] += 1
                        totals[match["type"]][1] += event.duration_ps * 1e-12
    return totals


def profile(run, runs, logdir):
    """(wall seconds per run, {op type: (count, seconds)} per run) of `runs` calls of `run`."""
    import tensorflow as tf
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(runs):
        run()
    wall = (time.perf_counter() - start) / runs
    tf.profiler.experimental.stop()
    return wall, {op: (n / runs, s / runs) for op, (n, s) in op_totals(logdir).items()}


def in_child(args, work, weights, verbose=False):
    """Runs `work` in a fresh process (its own TensorFlow threads); returns its stdout.

    With `verbose`, under ONEDNN_VERBOSE=1, once after warm-up; else profiled.
    """
    cmd = [sys.executable, __file__, "--child", work, "--weights", weights,
           "--model", args.model, "--num-classes", str(args.num_classes), "--size",
           str(args.size), "--train-size", str(args.train_size), "--batch-size",
           str(args.batch_size), "--threads", str(args.threads), "--runs", str(args.runs)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if verbose:
        env["ONEDNN_VERBOSE"] = "1"
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout


def onednn_counts(args, work, weights):
    """{primitive kind (implementation): (count, ms)} of one run of `work` under ONEDNN_VERBOSE."""
    counts = collections.defaultdict(lambda: [0, 0.0])
    timed = False
    for line in in_child(args, work, weights, verbose=True).splitlines():
        if line == "timed run":
            timed = True
        fields = line.split(",")
        if timed and len(fields) > 6 and fields[2:4] == ["primitive", "exec"]:
            counts[f"{fields[5]} ({fields[6]})"][0] += 1
            counts[f"{fields[5]} ({fields[6]})"][1] += float(fields[-1])
    return counts


def child(args):
    with tempfile.TemporaryDirectory() as workdir:
        run = build(args, args.child, workdir, args.weights)
        if os.environ.get("ONEDNN_VERBOSE"):
            print("timed run", flush=True)
            run()
        else:
            wall, totals = profile(run, args.runs, os.path.join(workdir, "trace"))
            print(json.dumps({"wall": wall, "totals": totals}))


def report(work, wall, totals, gflop, peak):
    """Prints the per-category and per-op-type table of one profiled work."""
    traced = sum(s for _, s in totals.values())
    by_category = collections.defaultdict(float)
    for op, (_, seconds) in totals.items():
        by_category[CATEGORY_OF.get(op, "other")] += seconds
    by_category["executor / Python overhead (wall - ops)"] = max(wall - traced, 0.0)
    print(f"\n{work}: {wall:.3f} s per run (wall), {gflop:.1f} GFLOP of convolution "
          f"arithmetic -> {gflop / wall:.1f} GFLOP/s = {gflop / wall / peak[0]:.0%} of the fp32 "
          f"peak ({peak[0]:.0f} GFLOP/s: {peak[1]})")
    conv_seconds = by_category.get("convolution", 0.0)
    if conv_seconds:
        print(f"  inside the convolution ops: {gflop / conv_seconds:.1f} GFLOP/s = "
              f"{gflop / conv_seconds / peak[0]:.0%} of peak")
    print(f"  {'category':42} {'s/run':>8} {'share':>6}")
    for name, seconds in sorted(by_category.items(), key=lambda kv: -kv[1]):
        print(f"  {name:42} {seconds:8.3f} {seconds / wall:6.1%}")
    print(f"  {'op type':42} {'count':>8} {'s/run':>8} {'share':>6}")
    for op, (count, seconds) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        if seconds / wall >= 0.001:
            print(f"  {op:42} {count:8.0f} {seconds:8.3f} {seconds / wall:6.1%}")



def layer_shapes(model, num_classes, size):
    """{(input side, Cin, Cout, kernel, stride, dilation, pad): count} of the network's convs."""
    from deeplab_resnet.model import arch as arch_lib
    from deeplab_resnet.model import layers
    shapes = collections.Counter()

    def conv(side, c):
        shapes[(side, c.in_channels, c.out_channels, c.kernel, c.stride, c.dilation, c.pad)] += 1
        return layers.conv_output_size(side, c.kernel, c.stride, c.pad, c.dilation)

    def pool(side, p):
        return layers.pool_output_size(side, p.kernel, p.stride, p.pad)

    arch_lib.run(arch_lib.architecture(model, num_classes), size, conv, pool,
                 join=lambda block, shortcut, branch: branch, join_head=lambda outputs: outputs[0])
    return shapes


def layer_rates(args, peak):
    """Times each distinct convolution of inference alone (conv + bias + ReLU, median of 3)."""
    import tensorflow as tf

    from deeplab_resnet.model import layers
    rng = np.random.default_rng(0)
    print(f"\nconvolutions of inference at {args.size}x{args.size}, each alone "
          f"(side, Cin, Cout, kernel, stride, dilation, pad): count, GFLOP, s, GFLOP/s")
    for (side, cin, cout, k, s, d, p), count in layer_shapes(
            args.model, args.num_classes, args.size).items():
        x = tf.constant(rng.normal(size=(1, side, side, cin)).astype(np.float32))
        w = tf.constant(rng.normal(size=(k, k, cin, cout)).astype(np.float32) * 0.01)
        b = tf.zeros([cout])
        conv = tf.function(lambda x, w=w, b=b, s=s, p=p, d=d: tf.nn.relu(layers.conv2d(
            x, w, b, stride=s, pad=p, dilation=d, differentiable=False)))
        conv(x).numpy()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            conv(x).numpy()
            times.append(time.perf_counter() - start)
        out = layers.conv_output_size(side, k, s, p, d)
        gflop = 2 * out * out * k * k * cin * cout / 1e9
        seconds = float(np.median(times))
        print(f"  {str((side, cin, cout, k, s, d, p)):34} x{count:3d} {gflop * count:7.1f} "
              f"{seconds * count:8.3f} {gflop / seconds:7.1f} ({gflop / seconds / peak[0]:.0%})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="inference,train")
    parser.add_argument("--size", type=int, default=513, help="inference image side")
    parser.add_argument("--train-size", type=int, default=321)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2, help="profiled runs after 2 warm-up runs")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", default=defaults.VARIANT)
    parser.add_argument("--num-classes", type=int, default=defaults.NUM_CLASSES)
    parser.add_argument("--onednn-verbose", action="store_true")
    parser.add_argument("--layers", action="store_true",
                        help="also time each distinct convolution of inference alone")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    peak = fp32_peak_gflops(args.threads)
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f} at start; TF_ENABLE_ONEDNN_OPTS="
          f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}")
    with tempfile.TemporaryDirectory() as workdir:
        weights, _, _ = write_models(workdir, args.model, args.num_classes, 0)
        for work in args.work.split(","):
            training = work == "train"
            size, batch = (args.train_size, args.batch_size) if training else (args.size, 1)
            result = json.loads(in_child(args, work, weights).splitlines()[-1])
            wall, totals = result["wall"], result["totals"]
            report(f"{work} {size}x{size}, batch {batch}", wall, totals,
                   conv_gflop(args.model, args.num_classes, size, batch, training), peak)
            if args.onednn_verbose:
                print("  oneDNN primitives of one run (ONEDNN_VERBOSE=1): kind (implementation)"
                      " count ms")
                for kind, (count, ms) in sorted(onednn_counts(args, work, weights).items(),
                                                key=lambda kv: -kv[1][1]):
                    print(f"    {kind:50} {count:6d} {ms:10.1f}")
        if args.layers:
            layer_rates(args, peak)
        print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
