"""The training scripts' flags, turned into a `TrainConfig`, and the run around `train`:
SIGTERM/SIGINT wired to its `StopRequest`, a progress bar on terminals, the exit status
of a stopped run (train, train_msc, fine_tune).

Imports no TensorFlow: the flags are parsed (and `--help` answers) first; `main` loads
TensorFlow quietly (`tf_quiet`) and the library's training after.
"""

import argparse
import contextlib
import dataclasses
import signal
import sys
import threading
import time

from tqdm import tqdm

from deeplab_resnet import cli, defaults, settings
from deeplab_resnet.cli import config_file, progress, tf_quiet
from deeplab_resnet.errors import progress_line
from deeplab_resnet.training import Callback, TrainConfig
from deeplab_resnet.training.config import get_recipe

# Flags whose config field has another name (argparse's dest -> field).
_RENAMED = {flag[2:].replace("-", "_"): field for field, flag in cli.FLAG_NAMES.items()}
# --mixed-precision, the old name of --precision: its values as --precision's.
_MIXED_PRECISION = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _MixedPrecision(argparse.Action):
    """--mixed-precision none|bf16|fp16: sets --precision, with a warning (stderr)."""

    def __call__(self, parser, namespace, value, option_string=None):
        precision = _MIXED_PRECISION[value]
        print(f"warning: --mixed-precision is now --precision: reading --mixed-precision {value} "
              f"as --precision {precision}", file=sys.stderr)
        setattr(namespace, self.dest, precision)


def build_parser(recipe, description=None):
    """The argument parser of a training script: model, data and training flags.

    Args:
        recipe: the script's `Recipe` (selects optimizer flags and defaults).
        description: the script's help text.
    """
    d = dataclasses.asdict(recipe.config())
    parser = cli.ArgumentParser(description=description)
    cli.add_model_args(parser)
    parser.add_argument("--class-names", type=cli.class_names, default=None,
                        help="comma-separated names of the --num-classes classes, in class "
                             "order, recorded in the checkpoints: evaluation and inference show "
                             "them (default: none recorded)")
    cli.add_data_args(parser, data_dir=d["data_dir"], data_list=d["data_list"])
    g = parser.add_argument_group("training")
    g.add_argument("--batch-size", type=cli.positive_int, default=d["batch_size"],
                   help=f"images per mini-batch on each replica; with --strategy mirrored or "
                        f"multi-worker the global batch is this x replicas "
                        f"(default: {d['batch_size']})")
    g.add_argument("--input-size", type=cli.input_size, default=d["input_size"],
                   help=f"crop size 'H,W' (default: {cli.typed(d['input_size'])})")
    g.add_argument("--learning-rate", type=cli.positive_float, default=d["learning_rate"],
                   help="base learning rate (default: %(default)s)")
    if recipe.optimizer == "sgd":
        g.add_argument("--momentum", type=cli.non_negative_float, default=d["momentum"],
                       help="SGD momentum (default: %(default)s)")
        g.add_argument("--power", type=cli.non_negative_float, default=d["power"],
                       help="power of the poly learning-rate schedule (default: %(default)s)")
        g.add_argument("--weight-decay", type=cli.non_negative_float, default=d["weight_decay"],
                       help="L2 decay of convolution weights (default: %(default)s)")
    g.add_argument("--num-steps", type=cli.positive_int, default=d["num_steps"],
                   help="number of updates (default: %(default)s)")
    g.add_argument("--grad-update-every", type=cli.positive_int, default=d["grad_update_every"],
                   help="mini-batches whose gradients are averaged per update, each loss the mean "
                        "over its own valid pixels (Caffe's iter_size: batch 10 as --batch-size 2 "
                        "--grad-update-every 5; default: %(default)s)")
    if recipe.multi_scale:
        g.add_argument("--scales", type=cli.scales, default=d["scales"],
                       help="input scales, the first is the reference "
                            f"(default: {cli.typed(d['scales'])})")
    _add_start_args(g, recipe, d)
    _add_output_args(g, d)
    _add_loss_args(parser.add_argument_group("loss"))
    _add_validation_args(parser.add_argument_group("validation while training"), d)
    cli.add_device_args(parser)
    config_file.add_config_arg(parser)
    return parser


def _add_loss_args(g):
    """Class weights and OHEM (default: Caffe's loss, every valid pixel counting once)."""
    g.add_argument("--class-weights", metavar="auto|FILE", default=None,
                   help="weight each class's pixels in the loss: 'auto' computes median-"
                        "frequency weights from the --data-list labels before the first update "
                        "(recorded, so that a resume uses the same), FILE holds one weight per "
                        "line in class order; the loss is the weighted mean (default: none, "
                        "Caffe's loss)")
    g.add_argument("--ohem-fraction", type=cli.fraction, default=None, metavar="F",
                   help="bootstrapped cross-entropy (OHEM): only the hardest F (0 < F <= 1) of "
                        "the valid pixels of each global batch count (default: all)")


def _add_validation_args(g, d):
    """--val-*: score a labelled list on the chief while training, keep the best checkpoint."""
    g.add_argument("--val-list", default=None, metavar="FILE",
                   help="labelled list ('IMAGE LABEL' lines) to score as evaluate.py does, "
                        "every --val-every updates and at the end; the mean IoU is shown and "
                        "written to TensorBoard (val/mean_iou), and the best checkpoint is kept "
                        "in SNAPSHOT_DIR/best/ with best.json (default: no validation)")
    g.add_argument("--val-data-dir", default=None,
                   help="folder the --val-list paths are relative to (default: --data-dir)")
    g.add_argument("--val-every", type=cli.positive_int, default=None, metavar="N",
                   help="validate every N updates (a checkpoint is saved then too; default: "
                        "at every checkpoint, --save-pred-every)")
    g.add_argument("--val-scales", type=cli.scales, default=d["val_scales"],
                   help="evaluate.py's --scales for the validation (default: 1.0)")
    g.add_argument("--val-flip", action="store_true", help="evaluate.py's --flip for it")
    g.add_argument("--val-deeplab-protocol", action="store_true",
                   help="evaluate.py's --deeplab-protocol for it")
    g.add_argument("--val-pad-size", type=cli.positive_int, default=d["val_pad_size"],
                   help="evaluate.py's --pad-size for it (default: %(default)s)")


def _add_start_args(g, recipe, d):
    """Augmentation, seed and starting weights: flags of the argument group `g` (defaults `d`)."""
    g.add_argument("--random-mirror", action="store_true",
                   help="flip images and labels horizontally at random")
    g.add_argument("--random-scale", action="store_true",
                   help="rescale images and labels by a random factor")
    g.add_argument("--scale-mode", choices=settings.SCALE_MODES, default=d["scale_mode"],
                   help="random scale: 'uniform' in [0.5, 1.5] (the 2017 TF port) or "
                        "'caffe' from {0.5, 0.75, 1, 1.25, 1.5} (DeepLab's Caffe; "
                        "default: %(default)s)")
    g.add_argument("--random-seed", type=int, default=d["random_seed"],
                   help="seed of data order, augmentation and new weights (default: %(default)s)")
    g.add_argument("--restore-from", default=None,
                   help=f"starting weights of a new run: {cli.WEIGHTS_HELP} (a training "
                        "snapshot too: its optimizer state is dropped; default: random "
                        "initialisation); when --snapshot-dir holds this run's checkpoint, "
                        "training resumes from it instead")
    if recipe.head_only:
        g.add_argument("--from-scratch", action="store_true",
                       help="allow training the head on a randomly initialised backbone when "
                            "no --restore-from is given (refused otherwise: almost always a "
                            "forgotten --restore-from)")
    g.add_argument("--not-restore-last", action="store_true",
                   help="do not restore the head (fc1_voc12_*): start a new one with "
                        f"--num-classes classes (default {defaults.NUM_CLASSES}), e.g. from an "
                        "ImageNet ResNet, "
                        "DeepLab's COCO-pretrained init.caffemodel or for another class count")
    if not recipe.head_only:
        g.add_argument("--is-training", action="store_true",
                       help="train BatchNorm (batch statistics, moving averages, scale and "
                            "offset); default: frozen")
        g.add_argument("--bn-momentum", type=cli.unit_interval, default=d["bn_momentum"],
                       help="moving-average fraction of the BatchNorm statistics with "
                            "--is-training (default: %(default)s, Caffe's; lower for short runs "
                            "from scratch)")


def _add_output_args(g, d):
    """Checkpoints, summaries and execution: flags of the argument group `g` (defaults `d`)."""
    g.add_argument("--save-num-images", type=cli.non_negative_int, default=d["save_num_images"],
                   help="images in each TensorBoard image summary (default: %(default)s)")
    g.add_argument("--save-pred-every", type=cli.positive_int, default=d["save_pred_every"],
                   help="save a checkpoint and image summaries every N updates "
                        "(default: %(default)s)")
    g.add_argument("--snapshot-dir", default=d["snapshot_dir"],
                   help="checkpoints and TensorBoard logs of one run; rerunning the same "
                        "command resumes from the latest checkpoint here, and another run's "
                        "checkpoint is refused (default: %(default)s)")
    g.add_argument("--keep-checkpoints", type=cli.positive_int, default=d["keep_checkpoints"],
                   help="checkpoints kept in --snapshot-dir (default: %(default)s)")
    g.add_argument("--stop-after", type=cli.positive_int, default=None,
                   help="end this run after N updates (a checkpoint is saved); rerun to go on")
    g.add_argument("--deterministic", action="store_true",
                   help="use deterministic kernels (tf.config.experimental.enable_op_determinism)")
    g.add_argument("--jit", action="store_true", help="compile the training step with XLA")
    g.add_argument("--precision", choices=sorted(settings.PRECISIONS), default=d["precision"],
                   help="the number format the network computes in: float32 ('fp32', default), "
                        "bfloat16 ('bf16') or float16 ('fp16', with dynamic loss scaling); "
                        "weights, logits and loss stay float32")
    g.add_argument("--mixed-precision", choices=sorted(_MIXED_PRECISION), dest="precision",
                   action=_MixedPrecision, default=argparse.SUPPRESS,
                   help="the old name of --precision ('none' is fp32)")
    g.add_argument("--log-every", type=cli.positive_int, default=d["log_every"],
                   help="read the updates' loss and accuracy back from the device every N "
                        "updates, together: progress, summaries and the NaN check follow them "
                        "(a run that goes wrong still stops at the update that did), and "
                        "multi-worker runs check for a stop request every N updates "
                        "(default: %(default)s)")
    g.add_argument("--max-skipped-updates", type=cli.positive_int,
                   default=d["max_skipped_updates"],
                   help="--precision fp16: stop the run when loss scaling skips this many "
                        "updates in a row (gradients that overflow float16; default: "
                        "%(default)s)")
    g.add_argument("--strategy", choices=settings.STRATEGIES, default=d["strategy"],
                   help="'mirrored': all local GPUs; 'multi-worker': one process per machine, "
                        "the cluster in TF_CONFIG. Each replica reads --batch-size images: the "
                        "global batch is --batch-size x replicas (default: default, one device)")


def config_from_args(args):
    """The `TrainConfig` of parsed training flags (flags a script lacks keep the defaults)."""
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    settings = {_RENAMED.get(name, name): value for name, value in vars(args).items()}
    return TrainConfig(**{name: value for name, value in settings.items() if name in fields})


@contextlib.contextmanager
def stop_on_signals(stop):
    """While the block runs, the first SIGINT or SIGTERM sets `stop` (the signal's name and
    number); the next one of that signal acts as it would without us (Ctrl-C twice
    interrupts at once, a second SIGTERM terminates)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python delivers signals to the main thread only
        return
    previous = {}

    def request(signum, frame):
        stop.request(signal.Signals(signum).name, signum)
        signal.signal(signum, previous[signum])

    for signum in SIGNALS:
        handler = signal.signal(signum, request)
        # None: a handler not installed from Python; the default is the closest.
        previous[signum] = signal.SIG_DFL if handler is None else handler
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class ProgressBar(Callback):
    """A tqdm bar on stdout: updates done of the total, loss and learning rate."""

    def __init__(self, name, total):
        self.name, self.total, self.bar = name, total, None

    def on_update(self, update, loss, learning_rate):
        if self.bar is None:  # the first update tells where a resumed run starts
            self.bar = tqdm(total=self.total, initial=update - 1, unit="step",
                            dynamic_ncols=True, desc=self.name, file=sys.stdout)
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{learning_rate:.3g}", refresh=False)
        self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class ProgressLines(Callback):
    """Progress off a terminal: a line on stdout at least every `interval` seconds with the
    update of the total, loss, learning rate, images/s and the time left.

    Args:
        name: the script's name (the lines' first word).
        total: the run's updates (`num_steps`).
        images_per_update: the global batch x mini-batches per update.
        interval, clock: as for `progress.Throttle`.
    """

    def __init__(self, name, total, images_per_update, interval=progress.INTERVAL,
                 clock=time.monotonic):
        self.name, self.total, self.images = name, total, images_per_update
        self.throttle = progress.Throttle(interval, clock)
        self.start = None  # (time, update) at the end of this call's first update

    def on_update(self, update, loss, learning_rate):
        if self.start is None:  # rates leave out the start-up and the first update's tracing
            self.throttle.last = self.throttle.clock()
            self.start = (self.throttle.last, update)
            return
        if not self.throttle.due() or update == self.total:
            return
        rate = (update - self.start[1]) / max(self.throttle.last - self.start[0], 1e-9)
        progress.write(progress_line(
            self.name, "update", update, self.total,
            [f"loss {loss:.4f}", f"learning rate {learning_rate:.3g}"], rate * self.images,
            (self.total - update) / rate))


class NativeLogClosedAtTheEnd(Callback):
    """Multi-worker runs: TensorFlow's native log goes to /dev/null once the work is done,
    before the workers' last wait for each other. After it they leave one by one, and those
    still there would log each departure as a crashed task or a lost coordination service."""

    def on_train_end(self):
        tf_quiet.close_native_log()


def stopped(result, stop, config):
    """The `Stopped` error of a run a signal stopped: one line, exit status 128 + the signal."""
    name = signal.Signals(stop.code).name
    if result.last_loss is None:
        done = "stopped before its first update"
    else:
        done = (f"stopped after update {result.updates} of {config.num_steps}, checkpoint "
                f"saved in {config.snapshot_dir}")
    return cli.Stopped(f"{name}: {done}; rerun the same command to resume", 128 + stop.code)


@cli.flag_errors
def main(recipe, argv=None, description=None):
    """A training script: parse the flags, train; a run stopped by a signal raises `Stopped`.

    Args:
        recipe: the script's `Recipe` or its name ("train", "train_msc", "fine_tune").
        argv: the arguments (default: sys.argv[1:]).
        description: the script's help text.
    """
    recipe = get_recipe(recipe)
    args = config_file.parse_args(build_parser(recipe, description), argv)
    config = config_from_args(args)
    tf_quiet.import_tensorflow()
    from deeplab_resnet.runtime import distribute
    from deeplab_resnet.training import StopRequest
    cli.use_devices(args)
    stop = StopRequest()
    # Made before the signal handlers: a multi-worker strategy takes SIGTERM when it starts.
    strategy = distribute.make_strategy(config.strategy)
    bar = ProgressBar(recipe.name, config.num_steps)
    images_per_update = (config.batch_size * strategy.num_replicas_in_sync
                         * config.grad_update_every)
    callbacks = [bar if sys.stdout.isatty()
                 else ProgressLines(recipe.name, config.num_steps, images_per_update)]
    if config.strategy == "multi-worker":
        callbacks.append(NativeLogClosedAtTheEnd())
    with cli.new_folders_removed_on_failure(args.snapshot_dir), stop_on_signals(stop), \
            contextlib.closing(bar):
        result = sys.modules[__name__].train(config, recipe, callbacks=callbacks, stop=stop,
                                             strategy=strategy)
        if result.stopped_early:
            raise stopped(result, stop, config)
    return 0


def __getattr__(name):
    """`train`, the library's, loaded (with TensorFlow) on first use (PEP 562); `main` reads
    it as this module's attribute, so that a test may replace it."""
    if name == "train":
        from deeplab_resnet.training import train
        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
