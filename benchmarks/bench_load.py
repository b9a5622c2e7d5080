"""Weights-loading benchmark: a ResNet-101 `.caffemodel` and checkpoint into a model.

Writes random ResNet-101 weights (21 classes, non-trivial BatchNorm statistics) as a
caffemodel (`caffe.write_caffemodel`) and as a checkpoint (`checkpoint.save_params`)
into a temporary folder, then times `checkpoint.load_weights` on each, `--repeats`
times, and prints the median wall-clock and CPU seconds (CPU time of this process is
less disturbed by other jobs on the machine) and the wall-clock range; also the reading
alone (`caffe.caffemodel_weights`; `checkpoint.check_meta` + `read_params`, what a load
did before building the model) and, for reference, the time to build the model with
random initial values (what every load spent before it assigned the weights read, until
loads built the model from the values read).
The files are written with the code being measured; run the script from two checkouts
to compare them, e.g.

    python benchmarks/bench_load.py                      # this checkout
    PYTHONPATH=/tmp/old python benchmarks/bench_load.py  # another one

Usage:
    python benchmarks/bench_load.py [--repeats 3] [--model resnet101]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def random_params(variant, num_classes, seed=0):
    """{name: float32 array} shaped like `variant`'s parameters."""
    from deeplab_resnet.model.arch import architecture
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in architecture(variant, num_classes).param_shapes().items():
        if name.endswith("/variance") or name.endswith("/scale"):
            params[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            params[name] = rng.normal(0.0, 0.05, shape).astype(np.float32)
    return params


def timed(load, repeats):
    """[(wall seconds, CPU seconds of this process)] of `repeats` calls of `load`."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        load()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="resnet101")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import deeplab_resnet
    from deeplab_resnet.weights import caffe
    from deeplab_resnet.weights import checkpoint
    from deeplab_resnet.model.network import DeepLabResNet
    print(f"package: {os.path.dirname(deeplab_resnet.__file__)}")
    params = random_params(args.model, 21)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as folder:
        caffemodel = os.path.join(folder, f"{args.model}.caffemodel")
        caffe.write_caffemodel(None, params, caffemodel,
                               text=caffe.deploy_prototxt(args.model, 21))
        prefix = checkpoint.save_params(params, os.path.join(folder, "ckpt", args.model),
                                        args.model, 21)
        runs = {"model built, random init (a new network)":
                lambda: DeepLabResNet(args.model, 21),
                "caffe.caffemodel_weights (read only)":
                lambda: caffe.caffemodel_weights(caffemodel, None),
                "check_meta + read_params (read only)":
                lambda: (checkpoint.check_meta(prefix, None, None),
                         checkpoint.read_params(prefix)),
                "load_weights(.caffemodel)": lambda: checkpoint.load_weights(caffemodel),
                "load_weights(checkpoint)": lambda: checkpoint.load_weights(prefix)}
        for label, run in runs.items():
            times = timed(run, args.repeats)
            wall, cpu = (statistics.median(t[i] for t in times) for i in (0, 1))
            print(f"{args.model} {label:46s} median {wall:5.2f} s wall, {cpu:5.2f} s CPU "
                  f"(wall {min(t[0] for t in times):.2f}-{max(t[0] for t in times):.2f}; "
                  f"{args.repeats} runs)")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
