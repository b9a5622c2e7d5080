"""Start-up: how long train.py, inference.py and evaluate.py take end to end, and on what.

Each command runs unmodified in a child process (its own `main`, through
`cli.run`, with ordinary flags) on a random-weight network (.npz) and random
513x513 images (train.py: 321x321 crops, batch 2, one update). The child
wraps a few library calls with timestamps before running the command:

    import TensorFlow    `tf_quiet.import_tensorflow()`
    import library       the deeplab_resnet modules the command imports
    model construction   `DeepLabResNet.__init__` (variables, initial values)
    weight loading       `checkpoint.load_weights` (train.py) or `segmenter._load_network`
                         (inference.py, evaluate.py) minus the construction inside it
    network preparation  `prediction.make_predictor` (BatchNorm folding, constants) /
                         `Trainer.__init__`
    tracing              Python time inside the traced functions
                         (`Predictor._probabilities`, `Trainer._single_step`)
    first run            the first `Predictor.__call__` / `Trainer.step` minus tracing:
                         graph optimisation, kernel set-up and the computation
    later runs           the mean of the others (with --images 2: the per-image time)
    train.py only        `ImageReader.__init__` (input pipeline setup), the image
                         summaries written with the first checkpoint (a prediction,
                         traced too), `snapshots.save` (checkpoint saving)
    rest                 everything else: interpreter start, flag and file checks,
                         reading images, the input pipeline, writing outputs, saving
                         the checkpoint, exit

With --target, issue 20's start-up target instead: inference.py on one image
end to end against TensorFlow's import + 2x the per-image time, both from one
invocation: a run on one image, then a run on 1 + `--images` images (at least 2)
whose extra time per image is the per-image time (network, decoding, writing).

Usage:
    python benchmarks/bench_startup.py [--commands inference,evaluate,train]
        [--model resnet101] [--images 1] [--threads 2] [--target]
"""

import time

STARTED = time.time()  # before anything else is imported

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

EVENTS = []  # (label, start, end) in time.time() seconds
COMMANDS = {"inference": "deeplab_resnet.cli.inference", "evaluate": "deeplab_resnet.cli.evaluate",
            "train": "deeplab_resnet.cli.train"}
STAGES = ("import TensorFlow", "import library", "model construction", "weight loading",
          "network preparation", "tracing", "first run", "later runs (mean)",
          "input pipeline setup", "summary images", "checkpoint saving", "rest")


@contextlib.contextmanager
def stamp(label):
    start = time.time()
    try:
        yield
    finally:
        EVENTS.append((label, start, time.time()))


def wrap(owner, name, label):
    """Replaces owner.name by a function recording its calls under `label`."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        with stamp(label):
            return original(*args, **kwargs)
    setattr(owner, name, timed)


def instrument():
    """Imports TensorFlow and the library, timed, and wraps the calls of interest."""
    from deeplab_resnet.cli import tf_quiet
    with stamp("import TensorFlow"):
        tf_quiet.import_tensorflow()
    with stamp("import library"):
        from deeplab_resnet.weights import checkpoint  # noqa: F401
        from deeplab_resnet.predict import evaluation  # noqa: F401
        from deeplab_resnet.data import pipeline
        from deeplab_resnet.model import network
        from deeplab_resnet.predict import prediction
        from deeplab_resnet.predict import segmenter
        from deeplab_resnet.training import loop, snapshots, step, summaries  # noqa: F401
    wrap(network.DeepLabResNet, "__init__", "construct")
    wrap(checkpoint, "load_weights", "load")
    wrap(segmenter, "_load_network", "load")
    wrap(prediction, "make_predictor", "prepare")
    wrap(step.Trainer, "__init__", "prepare")
    wrap(prediction.Predictor, "_probabilities", "trace")
    wrap(step.Trainer, "_single_step", "trace")
    wrap(prediction.Predictor, "__call__", "run")
    wrap(step.Trainer, "step", "run")
    wrap(pipeline.ImageReader, "__init__", "reader")
    wrap(summaries, "write_image_summary", "summary")
    wrap(snapshots, "save", "save")


def child(command, argv, events_path):
    """Runs one command under the timestamps; writes the events as JSON."""
    import importlib
    module = importlib.import_module(COMMANDS[command])
    instrument()
    from deeplab_resnet import cli
    status = 0
    try:
        cli.run(module.main, argv)
    except SystemExit as exc:
        status = exc.code or 0
    with open(events_path, "w") as f:
        json.dump({"started": STARTED, "events": EVENTS, "status": status}, f)


def stages(events, total):
    """{stage: seconds} from the child's events (see the module docstring)."""
    def spent(label):
        return sum(end - start for name, start, end in events if name == label)

    def inside(outer, label):
        """Time of `label` events inside `outer` events."""
        spans = [(s, e) for name, s, e in events if name == outer]
        return sum(e - s for name, s, e in events if name == label
                   and any(a <= s and e <= b for a, b in spans))

    runs = sorted((s, e) for name, s, e in events if name == "run")
    first_trace = inside("run", "trace") if runs else spent("trace")
    result = {
        "import TensorFlow": spent("import TensorFlow"),
        "import library": spent("import library"),
        "model construction": spent("construct"),
        "weight loading": spent("load") - inside("load", "construct"),
        "network preparation": spent("prepare"),
        "tracing": spent("trace"),
        "first run": (runs[0][1] - runs[0][0] - first_trace) if runs else 0.0,
        "later runs (mean)": (sum(e - s for s, e in runs[1:]) / (len(runs) - 1)
                              if len(runs) > 1 else 0.0),
        "input pipeline setup": spent("reader"),
        "summary images": spent("summary"),
        "checkpoint saving": spent("save"),
    }
    counted = sum(v for k, v in result.items() if k != "later runs (mean)")
    counted += sum(e - s for s, e in runs[1:])
    result["rest"] = total - counted
    return result


def write_inputs(workdir, args):
    """Random weights, images and labels; returns (weights, image paths, data list)."""
    import numpy as np
    from PIL import Image

    from bench_inference import write_models
    weights, _, _ = write_models(workdir, args.model, args.num_classes, 0)
    rng = np.random.default_rng(0)
    images, lines = [], []
    for i in range(args.images):
        image = os.path.join(workdir, "images", f"img{i}.png")
        label = os.path.join(workdir, f"label{i}.png")
        os.makedirs(os.path.dirname(image), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (513, 513, 3), np.uint8)).save(image)
        Image.fromarray(rng.integers(0, args.num_classes, (513, 513), np.uint8)).save(label)
        images.append(image)
        lines.append(f"{image} {label}\n")
    data_list = os.path.join(workdir, "list.txt")
    with open(data_list, "w") as f:
        f.writelines(lines)
    return weights, images, data_list


def command_args(command, workdir, weights, images, data_list, args):
    model = ["--model", args.model, "--num-classes", str(args.num_classes)]
    if command == "inference":
        target = images[0] if len(images) == 1 else os.path.dirname(images[0])
        return [target, weights, "--save-dir", os.path.join(workdir, "out")] + model
    if command == "evaluate":
        return ["--data-dir", "/", "--data-list", data_list, "--restore-from", weights] + model
    return ["--data-dir", "/", "--data-list", data_list, "--restore-from", weights,
            "--batch-size", "2", "--input-size", "321,321", "--num-steps", "1",
            "--snapshot-dir", os.path.join(workdir, "snapshots")] + model


def measure(command, argv, threads, workdir):
    """(total wall seconds, {stage: seconds}, exit status) of one command in a child."""
    events_path = os.path.join(workdir, f"{command}-events.json")
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    start = time.time()
    done = subprocess.run([sys.executable, __file__, "--child", command, "--events", events_path,
                           "--"] + argv, env=env, capture_output=True, text=True)
    total = time.time() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed:\n{done.stderr[-3000:]}")
    with open(events_path) as f:
        record = json.load(f)
    return total, stages(record["events"], total), record["status"]


def print_split(command, total, split):
    print(f"\n{command}.py: {total:.2f} s end to end "
          f"(load average {os.getloadavg()[0]:.1f})")
    for stage in STAGES:
        print(f"  {stage:22} {split[stage]:7.2f} s {split[stage] / total:6.1%}")


def target(workdir, weights, images, args):
    """Issue 20's start-up target for inference.py, from a 1-image and an n-image run."""
    one = command_args("inference", workdir, weights, images[:1], None, args)
    total_one, split_one, _ = measure("inference", one, args.threads, workdir)
    print_split("inference (1 image)", total_one, split_one)
    many = command_args("inference", workdir, weights, images, None, args)
    total_many, split_many, _ = measure("inference", many, args.threads, workdir)
    print_split(f"inference ({len(images)} images)", total_many, split_many)
    per_image = (total_many - total_one) / (len(images) - 1)
    bound = split_one["import TensorFlow"] + 2 * per_image
    print(f"\nper-image time {per_image:.2f} s (end-to-end difference of the two runs; the "
          f"network alone: {split_many['later runs (mean)']:.2f} s)")
    print(f"target: inference.py on one image {total_one:.2f} s <= TensorFlow's import "
          f"{split_one['import TensorFlow']:.2f} s + 2 x {per_image:.2f} s = {bound:.2f} s: "
          f"{'met' if total_one <= bound else 'not met'} ({total_one / bound:.2f}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", default="inference,evaluate,train")
    parser.add_argument("--model", default="resnet101")
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--images", type=int, default=1, help="513x513 images per command")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--target", action="store_true",
                        help="inference.py's start-up target (see above) instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--events", help=argparse.SUPPRESS)
    parser.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.argv, args.events)
        return
    if args.target:
        args.images = 1 + max(2, args.images)
    print(f"load average {os.getloadavg()[0]:.1f} at start; {args.model}, {args.images} image(s)"
          f" of 513x513 (train: one update, batch 2 of 321x321 crops), {args.threads} threads")
    with tempfile.TemporaryDirectory() as workdir:
        weights, images, data_list = write_inputs(workdir, args)
        if args.target:
            target(workdir, weights, images, args)
        for command in [] if args.target else args.commands.split(","):
            argv = command_args(command, workdir, weights, images, data_list, args)
            total, split, _ = measure(command, argv, args.threads, workdir)
            print_split(command, total, split)
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
