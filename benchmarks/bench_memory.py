"""Memory of one training update against the estimate `training.memory` makes before it.

Each case (variant, crop side, batch) runs in its own child process: it builds the model
and the optimizer as train.py does, reads its resident set size, makes two updates
(frozen BatchNorm, train.py's default) and reads its peak (VmHWM). The table shows the
measured growth of the update, the estimate of `training.memory.update_bytes` for the
same case and their ratio; the constants of `training.memory` were calibrated from this
table (machine: AMD EPYC Zen 4, AVX-512 + AVX512-BF16 + AVX512-VNNI, no AMX, 2 cores).

Usage:
    python benchmarks/bench_memory.py [--cases tiny:161:1,tiny:321:2,resnet101:161:1,...]
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CASES = ("tiny:161:1,tiny:321:1,tiny:321:2,resnet101:161:1,resnet101:161:2,"
                 "resnet101:321:1,resnet101:321:2")


def rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(variant, size, batch):
    import numpy as np
    import tensorflow as tf

    from deeplab_resnet import defaults
    from deeplab_resnet.model.network import DeepLabResNet
    from deeplab_resnet.training import losses, optim, step
    model = DeepLabResNet(variant, defaults.NUM_CLASSES)
    optimizer = optim.CaffeSGD(optim.sgd_params(model), 0.9, 5e-4)
    variables = {k: v for k, v in model.params.items() if v.trainable}
    trainer = step.Trainer(losses.Objective(model, defaults.IGNORE_LABEL), optimizer, variables)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-120, 130, (1, batch, size, size, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 21, (1, batch, size, size)).astype(np.int32))
    before = rss_mb("VmRSS")
    for _ in range(2):
        trainer.step(images, labels, 1e-4).read()
    print(json.dumps({"before_mb": before, "peak_mb": rss_mb("VmHWM")}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help="variant:side:batch, comma-separated (default: %(default)s)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, size, batch = args.child.split(":")
        child(variant, int(size), int(batch))
        return
    sys.path.insert(0, ROOT)
    from deeplab_resnet.training import memory
    print("machine: AMD EPYC Zen 4, AVX-512 + AVX512-BF16 + AVX512-VNNI, no AMX, 2 cores")
    print(f"{'case':<22}{'before MB':>10}{'peak MB':>10}{'update MB':>11}{'estimate MB':>13}"
          f"{'est/meas':>10}")
    for case in args.cases.split(","):
        variant, size, batch = case.split(":")
        result = subprocess.run([sys.executable, __file__, "--child", case], cwd=ROOT,
                                capture_output=True, text=True, check=True,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT))
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        grown = measured["peak_mb"] - measured["before_mb"]
        estimate = memory.update_bytes(variant, (int(size), int(size)), int(batch)) / 2**20
        print(f"{case:<22}{measured['before_mb']:>10.0f}{measured['peak_mb']:>10.0f}"
              f"{grown:>11.0f}{estimate:>13.0f}{estimate / max(grown, 1):>10.2f}")


if __name__ == "__main__":
    main()
