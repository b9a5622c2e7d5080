"""Peak memory of predicting one large image (Cityscapes' 2048x1024) in one piece.

Each measurement runs in a child process of its own, so its peak resident set
size (getrusage's ru_maxrss) is that prediction's alone: TensorFlow, the model
with random weights, and one image through `predict.make_predictor` (the
evaluation and inference path: BN folded, float32 unless --precision says
otherwise). The child reports its peak RSS after building the model (before any
image) and after predicting, and the seconds the prediction took (the first
call, so it includes tracing). The parent prints one line per protocol.

Usage:
    python benchmarks/bench_large_image.py [--size 1024,2048] [--model resnet101]
        [--num-classes 19] [--protocols full,deeplab] [--threads 2]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

PROTOCOLS = {"full": False, "deeplab": True}  # name -> deeplab_protocol


def child(args):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from deeplab_resnet.predict import prediction
    from deeplab_resnet.predict.config import PredictConfig
    from deeplab_resnet.model.network import DeepLabResNet
    model = DeepLabResNet(args.model, args.num_classes)
    predictor = prediction.make_predictor(model, PredictConfig(
        deeplab_protocol=PROTOCOLS[args.protocol], precision=args.precision))
    model_rss = peak_rss_mb()
    height, width = args.size
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    start = time.perf_counter()
    prediction = predictor(image)
    seconds = time.perf_counter() - start
    assert prediction.labels.shape == (height, width)
    print(json.dumps({"model_rss_mb": model_rss, "peak_rss_mb": peak_rss_mb(),
                      "seconds": seconds, "logits": list(prediction.logits.shape)}))


def peak_rss_mb():
    # Linux reports ru_maxrss in kilobytes.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(args, protocol):
    command = [sys.executable, os.path.abspath(__file__), "--child", "--protocol", protocol,
               "--size", f"{args.size[0]},{args.size[1]}", "--model", args.model,
               "--num-classes", str(args.num_classes), "--threads", str(args.threads),
               "--precision", args.precision]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["(no output)"]
        return None, f"failed (exit {result.returncode}): {tail[0]}"
    return json.loads(result.stdout.strip().splitlines()[-1]), None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1024,2048",
                        type=lambda t: tuple(int(v) for v in t.split(",")),
                        help="image height,width (default: Cityscapes' 1024,2048)")
    parser.add_argument("--model", default="resnet101")
    parser.add_argument("--num-classes", type=int, default=19)
    parser.add_argument("--protocols", default="full",
                        help=f"comma-separated, of {', '.join(PROTOCOLS)} (default: full)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--protocol", default="full", help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.child:
        child(args)
        return
    height, width = args.size
    print(f"{args.model}, {args.num_classes} classes, {args.precision}, one {width}x{height} "
          f"image, {args.threads} threads")
    for protocol in args.protocols.split(","):
        figures, error = measure(args, protocol)
        if error:
            print(f"  {protocol:8s} {error}")
            continue
        print(f"  {protocol:8s} peak RSS {figures['peak_rss_mb']:8.0f} MB "
              f"(model alone {figures['model_rss_mb']:.0f} MB), "
              f"{figures['seconds']:.1f} s, logits {figures['logits']}")


if __name__ == "__main__":
    main()
