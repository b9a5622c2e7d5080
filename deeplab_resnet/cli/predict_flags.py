"""The test-protocol flags of evaluate, inference and export, turned into a `Segmenter`.

Building the parser imports `deeplab_resnet.runtime.precision` (and so TensorFlow, which
`cli.run` has loaded by then) for the precision names.
"""

from deeplab_resnet import cli, defaults, settings
from deeplab_resnet.predict import crf
from deeplab_resnet.errors import DeepLabError, counted


def add_prediction_args(parser, with_crf=True):
    """The test-protocol flags shared by evaluate.py, inference.py and export.py.

    Args:
        parser: an argparse parser.
        with_crf: also add the dense-CRF flags (not for export, which serves the
            network only).
    """
    group = parser.add_argument_group("prediction")
    group.add_argument("--scales", type=cli.scales, default=(1.0,),
                       help="input scales, comma-separated, first = reference, e.g. 1.0,0.75,0.5; "
                            "logits of the other scales are resized to the first's and fused by "
                            "element-wise max (default: 1.0)")
    group.add_argument("--flip", action="store_true",
                       help="also predict the mirrored image and average the two probability maps")
    group.add_argument("--deeplab-protocol", action="store_true",
                       help="DeepLab's test protocol (behind the paper's numbers): pad the image "
                            "at the bottom/right with the mean colour to --pad-size, zoom the "
                            "logits x8 with align-corners bilinear interpolation, crop back to the "
                            "image. Default: the image at its own size, logits resized to it with "
                            "the same geometry (pixel p reads logit p/8)")
    group.add_argument("--pad-size", type=cli.positive_int, default=defaults.PAD_SIZE,
                       help="padded side for --deeplab-protocol (default %(default)s; rounded up "
                            "to 8k+1 and to the image size for larger images)")
    group.add_argument("--precision", choices=list(settings.PRECISIONS),
                       default=settings.DEFAULT_PRECISION,
                       help="number format the network computes in: bf16 (bfloat16) is about "
                            "1.7x faster on CPUs with AVX512-BF16/AMX and on Ampere+ GPUs, fp16 "
                            "on GPUs; logits, resizing, softmax and argmax stay float32. Where "
                            "the hardware lacks it, fp32 runs instead, with a message "
                            "(default: fp32)")
    cli.add_device_args(parser)
    if not with_crf:
        return group
    crf_defaults = crf.CRFParams()
    group.add_argument("--crf", action="store_true",
                       help="refine with a dense CRF (needs the optional pydensecrf2: "
                            "pip install '.[crf]'); defaults are DeepLab-v2's VOC settings")
    group.add_argument("--crf-iterations", type=int, default=crf_defaults.iterations,
                       help=f"mean-field iterations (default {crf_defaults.iterations})")
    group.add_argument("--crf-gaussian-sxy", type=float, default=crf_defaults.gaussian_sxy,
                       help=f"smoothness kernel xy std (default {crf_defaults.gaussian_sxy:g})")
    group.add_argument("--crf-gaussian-weight", type=float, default=crf_defaults.gaussian_weight,
                       help=f"smoothness kernel weight (default {crf_defaults.gaussian_weight:g})")
    group.add_argument("--crf-bilateral-sxy", type=float, default=crf_defaults.bilateral_sxy,
                       help=f"appearance kernel xy std (default {crf_defaults.bilateral_sxy:g})")
    group.add_argument("--crf-bilateral-srgb", type=float, default=crf_defaults.bilateral_srgb,
                       help=f"appearance kernel rgb std (default {crf_defaults.bilateral_srgb:g})")
    group.add_argument("--crf-bilateral-weight", type=float, default=crf_defaults.bilateral_weight,
                       help=f"appearance kernel weight (default {crf_defaults.bilateral_weight:g})")
    return group


def add_runtime_args(parser):
    """--tile, --tile-overlap and --batch-size (evaluate, inference)."""
    group = parser.add_argument_group("tiles and batches")
    group.add_argument("--tile", type=cli.size_pair, default=None, metavar="H,W",
                       help="predict images larger than H,W by overlapping tiles of that size, "
                            "each predicted as a whole image, their probabilities averaged "
                            "(mmsegmentation's slide inference); smaller images are predicted "
                            "whole (default: every image whole)")
    group.add_argument("--tile-overlap", type=cli.unit_interval, default=1.0 / 3.0,
                       metavar="F", help="fraction of a tile its neighbour shares, in [0, 1) "
                                         f"(default 1/3: {1.0 / 3.0:g})")
    group.add_argument("--batch-size", type=cli.positive_int, default=1,
                       help="run up to this many consecutive images of one size through the "
                            "network together (labels equal to one at a time; default 1)")
    return group


def add_dataset_arg(parser):
    """--dataset: whose class names label the scores and whose colours the PNGs (evaluate,
    inference)."""
    from deeplab_resnet.data import datasets
    parser.add_argument("--dataset", choices=list(datasets.DATASETS), default=None,
                        help="the dataset the model was trained for: its class names label the "
                             "scores and its colours the label PNGs and overlays (default: "
                             "recognised by the class count: 21 voc, 182 or 171 cocostuff, "
                             "19 cityscapes, 150 ade20k; else class_<i> and VOC's colours)")


def crf_params(args):
    """CRFParams from the flags of `add_prediction_args`, or None without --crf.

    Fails early (before any model is loaded) when pydensecrf2 is missing.
    """
    if not getattr(args, "crf", False):
        return None
    if args.crf_iterations < 0:
        raise DeepLabError(f"--crf-iterations must be >= 0, got {args.crf_iterations}")
    if not crf.available():
        raise DeepLabError(crf.INSTALL_HINT)
    return crf.CRFParams(
        iterations=args.crf_iterations, gaussian_sxy=args.crf_gaussian_sxy,
        gaussian_weight=args.crf_gaussian_weight, bilateral_sxy=args.crf_bilateral_sxy,
        bilateral_srgb=args.crf_bilateral_srgb, bilateral_weight=args.crf_bilateral_weight)


def load_segmenter(args, weights, crf_settings=None, class_names=None, dataset=None):
    """The `Segmenter` of `weights` for the flags of `add_model_args` and `add_prediction_args`.

    Args:
        args: the parsed flags.
        weights: the weights flag's value (--restore-from, MODEL_WEIGHTS).
        crf_settings: `crf_params(args)`.
        class_names: --class-names, or None.
        dataset: --dataset, or None.
    The classes file (--classes) wins over the names and colours the weights record.
    """
    from deeplab_resnet.predict.segmenter import Segmenter
    return Segmenter.load(weights, model=args.model, num_classes=args.num_classes,
                          prototxt=args.prototxt, precision=args.precision, scales=args.scales,
                          flip=args.flip, deeplab_protocol=args.deeplab_protocol,
                          crf=crf_settings, pad_size=args.pad_size, class_names=class_names,
                          dataset=dataset, classes=args.classes, tf32=args.tf32,
                          tile=getattr(args, "tile", None),
                          tile_overlap=getattr(args, "tile_overlap", 1.0 / 3.0))


def protocol(args, crf_settings=None):
    """The test protocol of the flags, in a few words: 'scales 1.0,0.5, flip, dense CRF'."""
    parts = [f"scales {cli.typed(tuple(args.scales))}"]
    if args.flip:
        parts.append("flip")
    if args.deeplab_protocol:
        parts.append(f"DeepLab protocol (pad {args.pad_size})")
    if crf_settings is not None:
        parts.append(f"dense CRF ({crf_settings.iterations} iterations)")
    if getattr(args, "tile", None) is not None:
        parts.append(f"tiles {cli.typed(args.tile)} (overlap {args.tile_overlap:.3g})")
    if getattr(args, "batch_size", 1) > 1:
        parts.append(f"batches of {args.batch_size}")
    return ", ".join(parts)


def print_setup(segmenter, args, crf_settings, images):
    """The first lines of evaluate and inference (after the devices): what was loaded, how
    it predicts, and how many images."""
    print(f"weights: {segmenter.weights} ({segmenter.model}, {segmenter.num_classes} classes)")
    print(f"prediction: {segmenter.precision}, {protocol(args, crf_settings)}; "
          f"{counted(images, 'image')}")
