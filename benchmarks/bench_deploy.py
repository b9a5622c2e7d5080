"""Deployment formats side by side, and tiled inference's memory (issue 29).

`formats` (one process, one run): a network with random weights (BatchNorm statistics and
affine drawn non-trivially, so that activations look trained) exported by
`Segmenter.export` as fp32 / fp16 / int8 LiteRT and fp32 ONNX, each loaded back with
`Segmenter.load`. Prints
* label agreement with TensorFlow (our `Predictor`, fp32) of the any-size fp32 LiteRT and
  ONNX files at several image sizes;
* seconds per image at --size (medians of --repeats after one warm-up) of TensorFlow,
  each LiteRT file (fixed --size, XNNPACK) and ONNX Runtime, all with --threads threads,
  and each one's ratio to TensorFlow in the same run; int8's and fp16's agreement with
  TensorFlow's labels at --size.

`tiles`: peak resident memory (getrusage ru_maxrss) of child processes predicting
(a) one --tile sized image whole, (b) a --large image by --tile tiles (labels only, as
evaluate.py and inference.py predict), each in a process of its own.

Usage:
    python benchmarks/bench_deploy.py formats [--model resnet101] [--size 513,513]
        [--threads 2] [--repeats 5] [--num-classes 21]
    python benchmarks/bench_deploy.py tiles [--model resnet101] [--large 4096,4096]
        [--tile 513,513]
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

PARITY_SIZES = ((375, 500), (333, 517), (3, 5), (17, 23), (1024, 2048))


def pair(text):
    return tuple(int(v) for v in text.split(","))


def setup(args, folder):
    """(Segmenter of a random network saved as a checkpoint in `folder`)."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from deeplab_resnet import Segmenter
    from deeplab_resnet.model.network import DeepLabResNet
    from deeplab_resnet.weights import checkpoint
    model = DeepLabResNet(args.model, args.num_classes, seed=0)
    rng = np.random.default_rng(0)
    params = {}
    for name, var in model.params.items():
        value = var.numpy()
        if name.endswith("/mean"):
            value = rng.normal(0, 0.1, value.shape)
        elif name.endswith("/variance"):
            value = rng.uniform(0.5, 1.5, value.shape)
        elif name.endswith("/scale"):
            value = rng.uniform(0.3, 0.6, value.shape)
        elif name.endswith("/offset"):
            value = rng.normal(0, 0.1, value.shape)
        params[name] = value.astype(np.float32)
    prefix = checkpoint.save_params(params, os.path.join(folder, "model"), args.model,
                                    args.num_classes)
    return Segmenter.load(prefix)


def sample(size, seed):
    """A shapes-dataset picture at `size`: something the network can be calibrated on."""
    from deeplab_resnet.data import shapes
    image, _ = shapes.make_sample(np.random.default_rng(seed), size[0], size[1], 3)
    return image


def seconds(run, repeats):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def formats(args):
    folder = args.folder or tempfile.mkdtemp(prefix="bench-deploy-")
    os.makedirs(folder, exist_ok=True)
    segmenter = setup(args, folder)
    files = {}
    for name, fmt, quantize, size in (("litert fp32", "tflite", None, args.size),
                                      ("litert fp16", "tflite", "fp16", args.size),
                                      ("litert int8", "tflite", "int8", args.size),
                                      ("onnx fp32", "onnx", None, args.size),
                                      ("litert fp32 any size", "tflite", None, None),
                                      ("onnx fp32 any size", "onnx", None, None)):
        path = os.path.join(folder, name.replace(" ", "_") + "." + fmt)
        files[name] = path
        if os.path.exists(path):  # --folder of an earlier run: the same random network
            continue
        calibration = [sample(args.size, i) for i in range(args.calibration)]
        start = time.perf_counter()
        segmenter.export(path, fmt, quantize=quantize, input_size=size,
                         calibration=calibration if quantize == "int8" else None)
        print(f"export {name}: {time.perf_counter() - start:.0f} s, "
              f"{os.path.getsize(path) / 1e6:.0f} MB", flush=True)
    if not args.skip_parity:
        parity(args, segmenter, files)
    timings(args, segmenter, files)


def parity(args, segmenter, files):
    from deeplab_resnet import Segmenter
    print(f"\nlabel agreement with TensorFlow fp32 ({args.model}, random weights):")
    rng = np.random.default_rng(1)
    for name in ("litert fp32 any size", "onnx fp32 any size"):
        loaded = Segmenter.load(files[name])
        agreement = []
        for size in PARITY_SIZES:
            image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
            same = loaded.predictor.predict_labels(image) == segmenter.predictor.predict_labels(
                image)
            agreement.append(f"{size[0]}x{size[1]} {same.mean() * 100:.3f}%")
        print(f"  {name:22s} " + ", ".join(agreement), flush=True)


def timings(args, segmenter, files):
    from deeplab_resnet import Segmenter
    image = sample(args.size, 99)
    reference = segmenter.predictor.predict_labels(image)
    tf_time = seconds(lambda: segmenter.predictor.predict_labels(image), args.repeats)
    print(f"\nseconds per {args.size[0]}x{args.size[1]} image, {args.threads} threads, medians "
          f"of {args.repeats} (one run, ratios to TensorFlow fp32 of this run):")
    print(f"  {'tensorflow fp32':22s} {tf_time:6.3f} s  1.00x")
    for name in ("litert fp32", "litert fp16", "litert int8", "onnx fp32"):
        loaded = Segmenter.load(files[name])
        t = seconds(lambda: loaded.predictor.predict_labels(image), args.repeats)
        same = (loaded.predictor.predict_labels(image) == reference).mean()
        print(f"  {name:22s} {t:6.3f} s  {t / tf_time:.2f}x  labels = TF on "
              f"{same * 100:.2f}%", flush=True)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def tiles_child(args):
    folder = tempfile.mkdtemp(prefix="bench-tiles-")
    segmenter = setup(args, folder)
    segmenter.predictor.tile(args.tile, 1.0 / 3.0)
    size = args.tile if args.whole else args.large
    image = np.random.default_rng(0).integers(0, 256, size + (3,), dtype=np.uint8)
    before = peak_rss_mb()
    start = time.perf_counter()
    labels = segmenter.predictor.predict_labels(image)
    assert labels.shape == size
    print(json.dumps({"model_mb": before, "peak_mb": peak_rss_mb(),
                      "seconds": time.perf_counter() - start}))


def tiles(args):
    print(f"{args.model}, {args.num_classes} classes, tiles {args.tile[0]}x{args.tile[1]} "
          f"(overlap 1/3), {args.threads} threads")
    for whole, label in ((True, f"one {args.tile[0]}x{args.tile[1]} image whole"),
                         (False, f"{args.large[0]}x{args.large[1]} by tiles")):
        command = [sys.executable, os.path.abspath(__file__), "tiles", "--child",
                   "--model", args.model, "--num-classes", str(args.num_classes),
                   "--tile", ",".join(map(str, args.tile)),
                   "--large", ",".join(map(str, args.large)), "--threads", str(args.threads)]
        command += ["--whole"] if whole else []
        result = subprocess.run(command, capture_output=True, text=True,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if result.returncode != 0:
            print(f"  {label}: failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"  {label:28s} peak RSS {figures['peak_mb']:6.0f} MB (model loaded: "
              f"{figures['model_mb']:.0f} MB), {figures['seconds']:.0f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("formats", "tiles"))
    parser.add_argument("--model", default="resnet101")
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--size", type=pair, default=(513, 513))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calibration", type=int, default=8,
                        help="int8: calibration images (shapes pictures)")
    parser.add_argument("--large", type=pair, default=(4096, 4096))
    parser.add_argument("--tile", type=pair, default=(513, 513))
    parser.add_argument("--folder", default=None,
                        help="formats: keep the checkpoint and exports here; files already "
                             "there are reused (default: a new temporary folder)")
    parser.add_argument("--skip-parity", action="store_true",
                        help="formats: timings only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tiles_child(args)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    formats(args) if args.what == "formats" else tiles(args)


if __name__ == "__main__":
    main()
