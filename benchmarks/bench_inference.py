"""CPU inference benchmark: DeepLab-ResNet against OpenCV DNN and PyTorch in the same run.

Every engine runs the same network with the same random weights, one image at a
time, in its own child process (so peak RSS is that engine's alone). The
children warm up, then take turns, one timed forward pass each per round
(`engines.alternate`), so that load from other processes falls on all alike.
The parent prints the median seconds per image, peak RSS, each output's
difference from `tf` (largest, relative to the largest logit, and the fraction
of pixels whose argmax agrees), and the ratios of this project's times to the
others'.

Engines:
    tf               this project, BN folded into the convolutions (deeplab_resnet.model.fused)
    tf-bf16          the same computing in bfloat16 (--precision bf16; float32 where
                     the CPU has no bf16 instructions, with a message)
    tf-bf16-f32head  bfloat16 backbone, ASPP head in float32
    tf-plain         this project, the training network (BatchNorm as separate ops)
    tf-convhead      `tf` with the ASPP head as four dilated convolutions (before issue 20)
    tf-xla           `tf` compiled with XLA (jit_compile=True)
    opencv           cv2.dnn.readNetFromCaffe on the generated deploy prototxt + caffemodel
    torch            a PyTorch DeepLab-v2 of the same geometry, eager, NCHW (skipped when
                     torch is absent, like every torch engine)
    torch-cl         the same in channels_last (NHWC) memory format
    torch-compile    torch.compile (inductor) with freezing, channels_last
    torch-bf16, torch-cl-bf16, torch-compile-bf16
                     the three above under torch.autocast("cpu", bfloat16) (emulated,
                     slow, on CPUs without AVX512-BF16/AMX)

Random weights give low-confidence logits, so the argmax agreement here
understates a trained network's; benchmarks/bench_precision.py measures that.

Usage:
    python benchmarks/bench_inference.py [--sizes 321,513] [--repeats 5] [--threads 2]
        [--engines tf,tf-bf16,torch]
"""

import argparse
import os
import sys
import tempfile

import numpy as np


from engines import TORCH_ENGINES, alternate, serve, torch_deeplab, torch_variant

from deeplab_resnet import defaults

# this project's engines: (compute precision, ASPP head in float32, BN folded)
TF_ENGINES = {"tf": ("fp32", False, True), "tf-bf16": ("bf16", False, True),
              "tf-bf16-f32head": ("bf16", True, True), "tf-plain": ("fp32", False, False),
              "tf-convhead": ("fp32", False, True), "tf-xla": ("fp32", False, True)}


def tf_engine(args):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from deeplab_resnet.weights import checkpoint
    from deeplab_resnet.runtime import precision
    from deeplab_resnet.model.fused import FusedDeepLab
    from deeplab_resnet.model.network import DeepLabResNet
    name, float32_head, fused = TF_ENGINES[args.engine]
    model = DeepLabResNet(args.model, args.num_classes, fold_bn=False)
    checkpoint.assign_params(model, dict(np.load(args.weights, allow_pickle=False)))
    net = FusedDeepLab(model, precision.resolve(name), float32_head) if fused else model
    if args.engine == "tf-convhead":
        net.head = None  # the head as its four dilated convolutions, as before issue 20
    forward = tf.function(lambda x: net(x), jit_compile=args.engine == "tf-xla")
    x = tf.constant(np.load(args.input, allow_pickle=False))
    return lambda: forward(x).numpy()


def opencv_engine(args):
    import cv2
    cv2.setNumThreads(args.threads)
    net = cv2.dnn.readNetFromCaffe(args.prototxt, args.caffemodel)
    x = np.load(args.input, allow_pickle=False).transpose(0, 3, 1, 2).copy()

    def forward():
        net.setInput(x)
        return net.forward().transpose(0, 2, 3, 1)
    return forward


def torch_engine(args):
    import torch
    from deeplab_resnet.model.arch import architecture
    torch.set_num_threads(args.threads)
    net = torch_deeplab(dict(np.load(args.weights, allow_pickle=False)),
                        architecture(args.model, args.num_classes)).eval()
    x = torch.from_numpy(np.load(args.input, allow_pickle=False).transpose(0, 3, 1, 2).copy())
    wrap, net, x = torch_variant(args.engine, net, x, inference=True)

    def forward():
        logits = wrap(lambda: net(x)).float().contiguous()
        return logits.numpy().transpose(0, 2, 3, 1)
    return forward


def child(args):
    if args.engine in TF_ENGINES:
        forward = tf_engine(args)
    else:
        forward = opencv_engine(args) if args.engine == "opencv" else torch_engine(args)

    def finish():
        np.save(args.output, forward().astype(np.float32), allow_pickle=False)
        return {}
    serve(forward, finish=finish)


def write_models(workdir, model_name, num_classes, seed):
    """Random-weight network as .npz (for TF/torch) and deploy prototxt + caffemodel (OpenCV)."""
    from deeplab_resnet.weights import caffe
    from deeplab_resnet.model.network import DeepLabResNet
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
    module = "torch" if engine in TORCH_ENGINES else {"opencv": "cv2"}.get(engine)
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
        weights, prototxt, caffemodel = write_models(workdir, args.model, args.num_classes,
                                                     args.seed)
        results = {}
        for size in args.sizes:
            image = np.random.default_rng(size).uniform(-120, 130, (1, size, size, 3))
            image = image.astype(np.float32)
            input_path = os.path.join(workdir, f"input{size}.npy")
            np.save(input_path, image, allow_pickle=False)
            commands = {engine: [sys.executable, __file__, "--child", "--engine", engine,
                                 "--input", input_path,
                                 "--output", os.path.join(workdir, f"{engine}{size}.npy"),
                                 "--weights", weights, "--prototxt", prototxt,
                                 "--caffemodel", caffemodel, "--model", args.model,
                                 "--num-classes", str(args.num_classes),
                                 "--threads", str(args.threads)]
                        for engine in engines}
            timings, failed = alternate(commands, args.repeats, args.threads)
            for engine, error in failed.items():
                print(f"{engine} at {size}: failed\n{error}", file=sys.stderr)
            outputs = {e: np.load(os.path.join(workdir, f"{e}{size}.npy"), allow_pickle=False)
                       for e in timings}
            reference = outputs.get("tf")
            for engine, out in outputs.items():
                results[(engine, size)] = timings[engine]
                if reference is not None and out.shape == reference.shape:
                    rel = np.abs(out - reference).max() / np.abs(reference).max()
                    agree = np.mean(out.argmax(-1) == reference.argmax(-1))
                    results[(engine, size)].update(max_rel_diff_vs_tf=float(rel),
                                                   argmax_agreement=float(agree))
    report(args, engines, skipped, results)


def report(args, engines, skipped, results):
    print(f"DeepLab {args.model}, {args.num_classes} classes, batch 1, {args.threads} threads, "
          f"median of {args.repeats} runs after 2 warm-up runs, engines taking turns")
    print(f"{'engine':19} {'size':>5} {'s/image':>9} {'peak RSS MB':>12} "
          f"{'max rel diff vs tf':>19} {'argmax = tf':>12}")
    for size in args.sizes:
        for engine in engines:
            r = results.get((engine, size))
            if r:
                diff = r.get("max_rel_diff_vs_tf", float("nan"))
                agree = r.get("argmax_agreement", float("nan"))
                print(f"{engine:19} {size:5d} {r['seconds']:9.3f} {r['peak_rss_mb']:12.0f} "
                      f"{diff:19.2e} {agree:12.4f}")
    for size in args.sizes:
        for ours in ("tf", "tf-bf16", "tf-bf16-f32head"):
            for peer in ("tf", "tf-plain", "tf-convhead", "tf-xla", "opencv", *TORCH_ENGINES):
                if peer != ours and (ours, size) in results and (peer, size) in results:
                    ratio = results[(ours, size)]["seconds"] / results[(peer, size)]["seconds"]
                    print(f"ratio {ours} / {peer} at {size}: {ratio:.2f}")
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="321,513", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--model", default=defaults.VARIANT)
    parser.add_argument("--num-classes", type=int, default=defaults.NUM_CLASSES)
    parser.add_argument("--engines", default=",".join(
        list(TF_ENGINES) + ["opencv", "torch", "torch-cl", "torch-compile"]))
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
