"""train.py against real Caffe's SGD solver on any DeepLab deploy net (needs real Caffe; not in CI).

For each case: real Caffe (../shared/tools/caffe/caffe_train_ref.py under the
python that imports it) trains the deploy net from a calibrated random
caffemodel (calibrate_caffemodel.py) on generated images; train.py trains the
same net from the same caffemodel on the same PNGs (whole-image crop, no
augmentation); the update (after - init) of every trained tensor is compared.
Prints the update errors ||ours - caffe|| / ||caffe - init||: all tensors
together, the head, the backbone median and the worst tensor, and the losses.

    export CAFFE_PYTHONPATH=~/.cache/bvlc-caffe/brocolli-caffe-9.0.2/python
    python tests/tools/check_training_with_caffe.py WORK --deploy misc/deploy.prototxt \\
        --model resnet101 --size 161 225 --case 2,1,3 --case 1,2,2

--save-case DIR keeps a small case (init.caffemodel, data, Caffe's blobs after
training, cases.json) for tests/test_caffe_training.py, which needs no Caffe.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

TESTS = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))  # the test helpers; the package itself is the installed one

import caffe_training  # noqa: E402 (found through the path set above)

CAFFE_TOOLS = TESTS.parent.parent / "shared" / "tools" / "caffe"

# Run inside Caffe's python: caffe_train_ref.py with every decay_mult set to 0 (weight decay off).
NO_DECAY = """
import sys
sys.path.insert(0, sys.argv[1])
import caffe_train_ref as ref
with_mults = ref.set_deeplab_lr_mults
def without_decay(net):
    with_mults(net)
    for layer in net.layer:
        for param in layer.param:
            param.decay_mult = 0
ref.set_deeplab_lr_mults = without_decay
sys.argv = ["caffe_train_ref.py"] + sys.argv[2:]
ref.main()
"""


def caffe(args, *command):
    env = dict(os.environ, PYTHONPATH=args.caffe_pythonpath, OPENBLAS_NUM_THREADS="1",
               GLOG_minloglevel="2")
    result = subprocess.run([args.caffe_python, *map(str, command)], env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"caffe failed: {' '.join(map(str, command))}\n{result.stderr[-3000:]}")
    return result.stdout


def parse_case(text):
    batch, micro, updates = (int(v) for v in text.split(","))
    return {"name": f"b{batch}x{micro}u{updates}", "batch_size": batch, "micro_batches": micro,
            "updates": updates}


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=pathlib.Path, help="scratch folder")
    parser.add_argument("--deploy", type=pathlib.Path, default=None,
                        help="deploy prototxt (default: the project's for --model/--num-classes)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--size", type=int, nargs=2, default=(161, 225),
                        help="image size H W, each 8k+1 (whole-image crops)")
    parser.add_argument("--case", type=parse_case, action="append",
                        help="BATCH,MICRO_BATCHES,UPDATES (repeatable; default 2,1,3 and 1,2,2)")
    parser.add_argument("--base-lr", type=float, default=2.5e-4)
    parser.add_argument("--no-weight-decay", action="store_true",
                        help="weight decay off (decay_mult 0 in Caffe, --weight-decay 0 here)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--caffe-python", default="/usr/bin/python3")
    parser.add_argument("--caffe-pythonpath", default=os.environ.get(
        "CAFFE_PYTHONPATH", os.path.expanduser("~/.cache/bvlc-caffe/brocolli-caffe-9.0.2/python")))
    parser.add_argument("--save-case", type=pathlib.Path, default=None,
                        help="also store the cases as golden cases in this folder")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    cases = args.case or [parse_case("2,1,3"), parse_case("1,2,2")]
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    deploy = args.deploy.resolve() if args.deploy else work / "deploy.prototxt"
    if args.deploy is None:
        from deeplab_resnet.weights.caffe import deploy_prototxt
        deploy.write_text(deploy_prototxt(args.model, args.num_classes) + "\n")
    images = max(c["batch_size"] * c["micro_batches"] for c in cases)
    sys.path.insert(0, str(CAFFE_TOOLS))
    import caffe_train_ref  # numpy + PIL only: the same images Caffe's script makes

    caffe_train_ref.make_data(str(work / "calibration"), *args.size, images, args.seed,
                              args.num_classes)
    init = work / "init.caffemodel"
    print(caffe(args, CAFFE_TOOLS / "calibrate_caffemodel.py", deploy, init,
                work / "calibration" / "data" / "JPEGImages", "--seed", args.seed).strip())
    weight_decay = 0.0 if args.no_weight_decay else 5e-4
    init_blobs = caffe_training.caffemodel_blobs(init)
    for case in cases:
        folder = work / case["name"]
        run_case(args, case, folder, deploy, init, init_blobs, weight_decay)
        if args.save_case:
            save(args, case, folder, deploy, init, weight_decay)


def run_case(args, case, folder, deploy, init, init_blobs, weight_decay):
    """Trains `case` with Caffe and with train.py from `init`; prints how far apart they end."""
    reference = [deploy, init, folder,
                 "--size", *args.size, "--batch", case["batch_size"],
                 "--micro-batches", case["micro_batches"], "--iters", case["updates"],
                 "--base-lr", args.base_lr, "--seed", args.seed,
                 "--num-classes", args.num_classes]
    if args.no_weight_decay:
        caffe(args, "-c", NO_DECAY, CAFFE_TOOLS, *reference)
    else:
        caffe(args, CAFFE_TOOLS / "caffe_train_ref.py", *reference)
    snapshots = folder / "snapshots"
    shutil.rmtree(snapshots, ignore_errors=True)
    result = caffe_training.run_train(
        deploy, init, folder / "data", folder / "data" / "train.txt", snapshots, args.size,
        case["batch_size"], case["micro_batches"], case["updates"], args.base_lr, args.model,
        args.num_classes, weight_decay=weight_decay)
    if result.returncode:
        sys.exit(f"train.py failed:\n{result.stderr[-3000:]}")
    with np.load(folder / "caffe_after.npz", allow_pickle=False) as after:
        caffe_after = dict(after)
    ours = caffe_training.trained_params(snapshots)
    errors, overall = caffe_training.update_errors(
        init_blobs, caffe_after, ours, caffe_training.compared_names(ours, caffe_after))
    head = [e for n, e in errors.items() if caffe_training.is_head(n)]
    backbone = [e for n, e in errors.items() if not caffe_training.is_head(n)]
    worst = max(errors, key=errors.get)
    case["caffe_losses"] = [float(v) for v in
                            (folder / "caffe_losses.txt").read_text().split()]
    losses = caffe_training.logged_losses(snapshots)
    print(f"{case['name']}: update error all tensors {overall:.2e}, head max {max(head):.2e}, "
          f"backbone median {np.median(backbone):.2e}, worst {worst} {errors[worst]:.2e}; "
          f"loss max diff {np.max(np.abs(np.subtract(losses, case['caffe_losses']))):.1e} "
          f"(caffe {case['caffe_losses']})")


def save(args, case, folder, deploy, init, weight_decay):
    """Adds `case` to the golden cases in --save-case (data, net and init shared by its cases)."""
    target = args.save_case
    index = target / "cases.json"
    spec = json.loads(index.read_text()) if index.exists() else {
        "net": "deploy.prototxt", "variant": args.model, "num_classes": args.num_classes,
        "init": "init.caffemodel", "input_size": list(args.size),
        "solver": {"lr_policy": "poly", "power": 0.9, "momentum": 0.9, "weight_decay": 5e-4},
        "cases": []}
    if not index.exists():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(deploy, target / spec["net"])
        shutil.copy(init, target / spec["init"])
    name = f"{case['name']}{'_nodecay' if weight_decay == 0 else ''}"
    # Each case reads exactly the images Caffe trained on (train.py shuffles its whole list);
    # caffe_train_ref.py makes them from (seed, count).
    data = f"data_seed{args.seed}_n{case['batch_size'] * case['micro_batches']}"
    if not (target / data).exists():
        shutil.copytree(folder / "data", target / data)
    shutil.copy(folder / "caffe_after.npz", target / f"{name}_after.npz")
    spec["cases"] = [c for c in spec["cases"] if c["name"] != name] + [
        {**case, "name": name, "base_lr": args.base_lr, "weight_decay": weight_decay,
         "data_dir": data, "data_list": f"{data}/train.txt", "after": f"{name}_after.npz"}]
    index.write_text(json.dumps(spec, indent=1) + "\n")


if __name__ == "__main__":
    main()
