"""The training scripts' flags, turned into a `TrainConfig` (train, train_msc, fine_tune).

Imports the library (and TensorFlow): the command modules import it after
`cli.run` has quieted TensorFlow's start-up.
"""

import dataclasses

from deeplab_resnet import cli, defaults, distribute
from deeplab_resnet.image_reader import SCALE_MODES
from deeplab_resnet.training import TrainConfig, train
from deeplab_resnet.training.step import COMPUTE_DTYPES

# Flags whose config field has another name.
_RENAMED = {"model": "variant", "not_restore_last": "new_head", "is_training": "train_bn"}


def build_parser(recipe, description=None):
    """The argument parser of a training script: model, data and training flags.

    Args:
        recipe: the script's `Recipe` (selects optimizer flags and defaults).
        description: the script's help text.
    """
    d = dataclasses.asdict(recipe.config())
    parser = cli.ArgumentParser(description=description)
    cli.add_model_args(parser)
    cli.add_data_args(parser, data_dir=d["data_dir"], data_list=d["data_list"])
    g = parser.add_argument_group("training")
    g.add_argument("--batch-size", type=cli.positive_int, default=d["batch_size"],
                   help=f"images per mini-batch on each replica; with --strategy mirrored or "
                        f"multi-worker the global batch is this x replicas "
                        f"(default: {d['batch_size']})")
    g.add_argument("--input-size", type=cli.input_size, default=d["input_size"],
                   help="crop size 'H,W' (default: %(default)s)")
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
                       help="input scales, the first is the reference (default: 1.0,0.75,0.5)")
    g.add_argument("--random-mirror", action="store_true",
                   help="flip images and labels horizontally at random")
    g.add_argument("--random-scale", action="store_true",
                   help="rescale images and labels by a random factor")
    g.add_argument("--scale-mode", choices=SCALE_MODES, default=d["scale_mode"],
                   help="random scale: 'uniform' in [0.5, 1.5] (the 2017 TF port, default) or "
                        "'caffe' from {0.5, 0.75, 1, 1.25, 1.5} (DeepLab's Caffe)")
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
                            "--is-training (Caffe's %(default)s; lower for short runs from "
                            "scratch)")
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
    g.add_argument("--mixed-precision", choices=sorted(COMPUTE_DTYPES),
                   default=d["mixed_precision"],
                   help="compute in bfloat16 ('bf16') or float16 ('fp16', with dynamic loss "
                        "scaling) on float32 weights; logits and loss stay float32 "
                        "(default: none)")
    g.add_argument("--strategy", choices=distribute.STRATEGIES, default=d["strategy"],
                   help="'mirrored': all local GPUs; 'multi-worker': one process per machine, "
                        "the cluster in TF_CONFIG. Each replica reads --batch-size images: the "
                        "global batch is --batch-size x replicas (default: default, one device)")
    cli.add_device_args(parser)
    return parser


def config_from_args(args):
    """The `TrainConfig` of parsed training flags (flags a script lacks keep the defaults)."""
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    settings = {_RENAMED.get(name, name): value for name, value in vars(args).items()}
    return TrainConfig(**{name: value for name, value in settings.items() if name in fields})


@cli.flag_errors
def main(recipe, argv=None, description=None):
    """A training script: parse the flags, train."""
    args = build_parser(recipe, description).parse_args(argv)
    cli.use_devices(args)
    with cli.new_folder_removed_on_failure(args.snapshot_dir):
        return train(config_from_args(args), recipe, name_of=cli.flag_name)
