"""Builds VOC2012/SegmentationClassAug: VOC's own labels plus SBD's, as palette PNGs.

SBD (Hariharan et al., the "benchmark_RELEASE" archive) stores its labels as
MATLAB files `cls/NAME.mat` holding a struct `GTcls` whose field `Segmentation`
is the HxW class-index map (0 = background, 1..20 = classes). This script
writes each as `NAME.png` in the VOC style: a palette ('P') PNG whose pixel
values are the class indices and whose palette is the VOC colour map.

VOC2012's own `SegmentationClass/*.png` are copied there as well (read as
indices, never decoded as colours, so 255 = ignore on object borders is kept).
Where an image has both, VOC's label wins: it is the finer annotation, and it
is the one the val set is scored against.

    python dataset/convert_sbd.py --voc-root VOCdevkit/VOC2012 \\
        --sbd-root benchmark_RELEASE/dataset
"""

import glob
import os

import numpy as np
import scipy.io
from tqdm import tqdm

from _common import (ArgumentParser, NUM_VOC_CLASSES, DeepLabError, check_label_values,
                     check_writable_dir, resolve_sbd_root, resolve_voc_root, run)
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.palette import save_label_png

OUTPUT_NAME = "SegmentationClassAug"


def parse_args(argv):
    parser = ArgumentParser(
        description="Convert SBD cls/*.mat labels and copy VOC2012 SegmentationClass/*.png into "
                    "one folder of palette PNGs (VOC's label kept where both exist).")
    parser.add_argument("--voc-root", required=True, help="the VOCdevkit/VOC2012 folder")
    parser.add_argument("--sbd-root", required=True,
                        help="SBD's benchmark_RELEASE/dataset folder (holding cls/)")
    parser.add_argument("--output-dir", default=None,
                        help=f"where the PNGs go (default: <voc-root>/{OUTPUT_NAME})")
    parser.add_argument("--num-classes", type=int, default=NUM_VOC_CLASSES,
                        help="label values must be below this, or 255 (default: 21)")
    return parser.parse_args(argv)


def read_sbd_label(path):
    """An SBD `cls/*.mat` file -> HxW uint8 class indices."""
    try:
        contents = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except Exception as exc:  # noqa: BLE001
        # loadmat fails on damaged files with whatever its parser trips on
        # (IndexError, OSError, MatReadError, ValueError, ...); any of them
        # means "this file is not a readable .mat", which is what the user needs.
        reason = str(exc) or type(exc).__name__
        raise DeepLabError(f"{path}: not a readable MATLAB file ({reason})") from None
    if "GTcls" not in contents:
        found = ", ".join(sorted(k for k in contents if not k.startswith("__"))) or "nothing"
        raise DeepLabError(f"{path}: no 'GTcls' struct in it (found: {found}); "
                        "is this an SBD cls/ file?")
    gt = contents["GTcls"]
    # squeeze_me gives a mat_struct; a struct array saved by other tools can
    # come back as a 1x1 object array, so unwrap that first.
    if isinstance(gt, np.ndarray) and gt.dtype == object and gt.size == 1:
        gt = gt.item()
    segmentation = getattr(gt, "Segmentation", None)
    if segmentation is None:
        raise DeepLabError(f"{path}: struct 'GTcls' has no 'Segmentation' field")
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2 or segmentation.size == 0:
        raise DeepLabError(f"{path}: GTcls.Segmentation has shape {segmentation.shape}, "
                        "expected an HxW map")
    if not np.issubdtype(segmentation.dtype, np.integer) and not (
            np.issubdtype(segmentation.dtype, np.floating)
            and np.array_equal(segmentation, np.round(segmentation))):
        raise DeepLabError(f"{path}: GTcls.Segmentation holds {segmentation.dtype} values, "
                        "not class indices")
    if segmentation.min() < 0 or segmentation.max() > 255:
        raise DeepLabError(f"{path}: GTcls.Segmentation values outside 0..255")
    return segmentation.astype(np.uint8)


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def main(argv=None):
    args = parse_args(argv)
    voc_root = resolve_voc_root(args.voc_root)
    sbd_root = resolve_sbd_root(args.sbd_root)
    voc_label_dir = os.path.join(voc_root, "SegmentationClass")
    sbd_label_dir = os.path.join(sbd_root, "cls")
    output_dir = args.output_dir or os.path.join(voc_root, OUTPUT_NAME)

    voc_files = sorted(glob.glob(os.path.join(glob.escape(voc_label_dir), "*.png")))
    sbd_files = sorted(glob.glob(os.path.join(glob.escape(sbd_label_dir), "*.mat")))
    if not voc_files:
        raise DeepLabError(f"{voc_label_dir}: no label PNGs (is --voc-root the VOC2012 trainval "
                        "release?)")
    if not sbd_files:
        raise DeepLabError(f"{sbd_label_dir}: no .mat files "
                        "(is --sbd-root benchmark_RELEASE/dataset?)")
    if os.path.isdir(output_dir) and os.path.samefile(output_dir, voc_label_dir):
        raise DeepLabError(f"--output-dir {output_dir}: is VOC's own SegmentationClass; "
                        "choose another folder")
    check_writable_dir(output_dir, "--output-dir")

    # VOC first, then only the SBD names VOC does not have: VOC's label is
    # kept where both exist (see the module docstring).
    voc_names = {stem(f) for f in voc_files}
    sbd_only = [f for f in sbd_files if stem(f) not in voc_names]

    # tqdm shows a bar only on a terminal (disable=None), so logs and the
    # one-line error output stay clean when run from scripts.
    for path in tqdm(voc_files, desc="VOC SegmentationClass", unit="file", disable=None):
        labels = read_label(path)
        check_label_values(labels, path, args.num_classes)
        save_label_png(labels, os.path.join(output_dir, stem(path) + ".png"))
    for path in tqdm(sbd_only, desc="SBD cls/*.mat", unit="file", disable=None):
        labels = read_sbd_label(path)
        check_label_values(labels, path, args.num_classes)
        save_label_png(labels, os.path.join(output_dir, stem(path) + ".png"))

    overlap = len(sbd_files) - len(sbd_only)
    print(f"VOC2012 SegmentationClass: {len(voc_files)} labels copied")
    print(f"SBD cls: {len(sbd_files)} labels, {len(sbd_only)} converted, "
          f"{overlap} skipped (VOC's label kept)")
    print(f"{len(voc_files) + len(sbd_only)} labels -> {output_dir}")

    # SBD's images are VOC2011 trainval images, all of which are in VOC2012's
    # JPEGImages; a gap here means an incomplete VOC download, which the list
    # builder would refuse later anyway, so say it now.
    image_dir = os.path.join(voc_root, "JPEGImages")
    no_image = [stem(f) for f in sbd_only
                if not os.path.isfile(os.path.join(image_dir, stem(f) + ".jpg"))]
    if no_image:
        print(f"note: {len(no_image)} SBD labels have no image in {image_dir}, "
              f"first: {no_image[0]}.jpg")
    return 0


if __name__ == "__main__":
    run(main)
