"""Prepares a benchmark in one command: label PNGs of class indices and list files.

    python dataset/prepare.py NAME --root ROOT [--list-dir DIR]
    python dataset/prepare.py folders --images DIR --labels DIR --list-dir OUT
        [--name NAME] [--val-fraction F] [--seed S]

NAME is cocostuff10k, cocostuff164k, cityscapes, ade20k or voc; `folders` is
your own data: images (any format) and label PNGs of class indices in two
folders (sub-folders searched), paired by file name, split into
OUT/NAME_train.txt and OUT/NAME_val.txt (see `_folders`). The labels are
written as palette PNGs (pixel value = training class index, 255 = ignore,
coloured by the dataset's palette, `deeplab_resnet.data.datasets`) into a new folder
inside ROOT, never over the originals; the lists `DIR/NAME_train.txt` and
`DIR/NAME_val.txt` (`cocostuff164k_171_*` with --classes 171) hold `/IMAGE /LABEL`
lines relative to ROOT, so ROOT is the
--data-dir of training and evaluation. Names are sorted: the same archive
always gives byte-identical lists. `voc` runs the VOC + SBD tools
(convert_sbd.py, build_voc_lists.py) and needs --sbd-root.

The mappings (archive value -> training index):
    cocostuff10k   annotations/*.mat field S: 0 (unlabeled) -> 255, 1..182 -> 0..181
    cocostuff164k  stuffthingmaps PNGs: 0..181 kept, 255 kept; with --classes 171 the 11
                   unused COCO thing ids -> 255 and the rest renumbered 0..170
    cityscapes     *_gtFine_labelIds.png: the 19 train ids (road 7 -> 0 ... bicycle 33 -> 18),
                   every other id -> 255
    ade20k         annotations PNGs: 0 (other) -> 255, 1..150 -> 0..149
"""

import argparse
import dataclasses
import glob
import os

import numpy as np
import scipy.io
from tqdm import tqdm

from _common import (DATASET_DIR, IGNORE_LABEL, ArgumentParser, DeepLabError, check_writable_dir,
                     read_names, run, write_text)
from _folders import prepare_folders
from deeplab_resnet.data import datasets
from deeplab_resnet.data.labels import read_label
from deeplab_resnet.data.palette import save_label_png

LABEL_DIR = "labels_deeplab"

LAYOUTS = """\
expected layouts (ROOT is --root; the folders the tool adds are marked +):

  cocostuff10k   ROOT = cocostuff-10k-v1.1/
                   images/COCO_train2014_000000000077.jpg ...
                   annotations/COCO_train2014_000000000077.mat ...   (MATLAB, field S)
                   imageLists/train.txt, test.txt                    (test -> the val list)
                 + labels_deeplab/COCO_train2014_000000000077.png ...
  cocostuff164k  ROOT = the folder holding
                   images/train2017/000000000009.jpg, images/val2017/...
                   stuffthingmaps_trainval2017/train2017/000000000009.png, .../val2017/...
                 + labels_deeplab/{train2017,val2017}/*.png (labels_deeplab_171/: --classes 171)
  cityscapes     ROOT = the folder holding
                   leftImg8bit/{train,val}/CITY/CITY_xxxxxx_yyyyyy_leftImg8bit.png
                   gtFine/{train,val}/CITY/CITY_xxxxxx_yyyyyy_gtFine_labelIds.png
                 + labels_deeplab/{train,val}/CITY/CITY_xxxxxx_yyyyyy_gtFine_labelTrainIds.png
  ade20k         ROOT = ADEChallengeData2016/ (or the folder holding it)
                   images/{training,validation}/ADE_train_00000001.jpg ...
                   annotations/{training,validation}/ADE_train_00000001.png ...
                 + labels_deeplab/{training,validation}/*.png
  voc            ROOT = VOCdevkit/VOC2012/, with --sbd-root benchmark_RELEASE/dataset
                 + SegmentationClassAug/*.png  (see dataset/convert_sbd.py)

lists: DIR/NAME_train.txt, DIR/NAME_val.txt (cocostuff164k_171_* with --classes 171)"""

# The published split sizes; other counts are reported, not refused (a subset,
# another release).
STANDARD_COUNTS = {"cocostuff10k": (9000, 1000), "cocostuff164k": (118287, 5000),
                   "cityscapes": (2975, 500), "ade20k": (20210, 2000)}


@dataclasses.dataclass(frozen=True)
class Mapping:
    """Archive label value -> training index, for the values the archive may hold."""
    table: np.ndarray   # 256 uint8: the training index of each archive value
    valid: np.ndarray   # 256 bool: which archive values may occur
    values: str         # the valid values in words, for messages

    @property
    def num_classes(self):
        return len(set(self.table.tolist()) - {IGNORE_LABEL})

    def apply(self, values, path):
        """HxW archive values -> HxW uint8 training indices; an invalid value is an error."""
        values = np.asarray(values)
        found = np.unique(values)
        bad = [int(v) for v in found if not 0 <= v <= 255 or not self.valid[int(v)]]
        if bad:
            shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise DeepLabError(f"{path}: label values {shown} are not {self.values}")
        return self.table[values.astype(np.intp)]


def mapping(pairs, valid, values):
    """A Mapping sending each (archive value, index) of `pairs` there, the rest to 255."""
    table = np.full(256, IGNORE_LABEL, np.uint8)
    for source, target in pairs:
        table[source] = target
    mask = np.zeros(256, bool)
    mask[list(valid)] = True
    return Mapping(table, mask, values)


COCOSTUFF = len(datasets.COCOSTUFF_CLASSES)
COCOSTUFF_USED = [i for i in range(COCOSTUFF) if i not in datasets.COCOSTUFF_UNUSED]
MAPPINGS = {
    "cocostuff10k": mapping([(i + 1, i) for i in range(COCOSTUFF)], range(COCOSTUFF + 1),
                            f"COCO-Stuff ids (0 unlabeled, 1..{COCOSTUFF})"),
    "cocostuff164k": mapping([(i, i) for i in range(COCOSTUFF)], [*range(COCOSTUFF), 255],
                             f"COCO-Stuff classes (0..{COCOSTUFF - 1}, 255 unlabeled)"),
    "cocostuff164k_171": mapping([(old, new) for new, old in enumerate(COCOSTUFF_USED)],
                                 [*range(COCOSTUFF), 255],
                                 f"COCO-Stuff classes (0..{COCOSTUFF - 1}, 255 unlabeled)"),
    "cityscapes": mapping([(label_id, train_id) for train_id, (label_id, _, _)
                           in enumerate(datasets.CITYSCAPES_TRAIN_IDS)], range(256),
                          "Cityscapes label ids"),
    "ade20k": mapping([(i + 1, i) for i in range(len(datasets.ADE20K_CLASSES))],
                      range(len(datasets.ADE20K_CLASSES) + 1),
                      f"ADE20K classes (0 other, 1..{len(datasets.ADE20K_CLASSES)})"),
}


@dataclasses.dataclass(frozen=True)
class Item:
    """One listed image; paths relative to ROOT."""
    image: str
    source: str   # the archive's label file
    label: str    # the label PNG this tool writes


def parse_args(argv):
    parser = ArgumentParser(
        description="Prepare a segmentation benchmark: label PNGs (class index per pixel, "
                    "255 = ignore) in a new folder inside --root, and list files.",
        epilog=LAYOUTS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", metavar="NAME",
                        choices=["cocostuff10k", "cocostuff164k", "cityscapes", "ade20k", "voc",
                                 "folders"],
                        help="cocostuff10k, cocostuff164k, cityscapes, ade20k, voc, or folders "
                             "(your own: --images and --labels)")
    parser.add_argument("--root", default=None,
                        help="the dataset's folder (see the layouts below); the --data-dir "
                             "for training and evaluation")
    parser.add_argument("--list-dir", default=DATASET_DIR,
                        help="where NAME_train.txt and NAME_val.txt go (default: this "
                             "dataset/ folder)")
    parser.add_argument("--classes", type=int, choices=[182, 171], default=182,
                        help="cocostuff164k only: 171 drops the 11 unused COCO thing ids "
                             "(mmsegmentation's setting; default 182, DeepLab's)")
    parser.add_argument("--sbd-root", default=None,
                        help="voc only (required): SBD's benchmark_RELEASE/dataset folder")
    _add_folders_args(parser)
    args = parser.parse_args(argv)
    _check_folders_args(parser, args)
    if args.classes != 182 and args.name != "cocostuff164k":
        parser.error("--classes 171 applies to cocostuff164k only")
    if (args.sbd_root is not None) != (args.name == "voc"):
        parser.error("--sbd-root is required for voc and applies to voc only "
                     "(VOC without SBD: dataset/build_voc_lists.py)")
    return args


def _add_folders_args(parser):
    group = parser.add_argument_group("folders (your own dataset)")
    group.add_argument("--images", default=None,
                       help="folder of the images (any image format; sub-folders searched)")
    group.add_argument("--labels", default=None,
                       help="folder of the label PNGs (class index per pixel, 255 = ignore; "
                            "colour-coded masks: dataset/convert_rgb_labels.py --classes "
                            "first), paired with the images by file name")
    group.add_argument("--name", dest="list_name", default="folders",
                       help="the lists' name: NAME_train.txt, NAME_val.txt (default: folders)")
    group.add_argument("--val-fraction", type=float, default=0.1,
                       help="fraction of the pairs in the val list, 0 <= F < 1 (default: 0.1)")
    group.add_argument("--seed", type=int, default=0,
                       help="seed of the split: the same files and seed give the same lists "
                            "(default: 0)")


def _check_folders_args(parser, args):
    folders = args.name == "folders"
    if folders and (args.images is None or args.labels is None):
        parser.error("folders needs --images DIR and --labels DIR")
    if not folders and args.root is None:
        parser.error(f"{args.name} needs --root")
    if folders and args.root is not None:
        parser.error("--root is for the benchmarks; folders takes --images and --labels")
    if not folders and (args.images is not None or args.labels is not None):
        parser.error("--images and --labels are for folders")
    if not 0 <= args.val_fraction < 1:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if not args.list_name or any(c in args.list_name for c in "/\\ ") \
            or args.list_name.startswith("."):
        parser.error(f"--name '{args.list_name}': a plain file name is needed")


def require_folders(root, folders, name):
    """A one-line error naming the first of `folders` (relative to root) that is missing."""
    for folder in folders:
        if not os.path.isdir(os.path.join(root, folder)):
            raise DeepLabError(f"--root {root}: no {folder}/ in it; is this the {name} folder? "
                               "(see --help for the expected layout)")


def files_in(root, pattern):
    """Paths relative to root of the files matching `pattern` (relative, glob), sorted."""
    found = glob.glob(os.path.join(glob.escape(root), pattern))
    return sorted(os.path.relpath(path, root) for path in found if os.path.isfile(path))


def cocostuff10k_items(root):
    require_folders(root, ["images", "annotations", "imageLists"], "cocostuff-10k-v1.1")
    splits = {}
    for split, list_name in (("train", "train.txt"), ("val", "test.txt")):
        names = read_names(os.path.join(root, "imageLists", list_name), "COCO-Stuff list")
        splits[split] = [Item(f"images/{n}.jpg", f"annotations/{n}.mat", f"{LABEL_DIR}/{n}.png")
                         for n in sorted(set(names))]
    return splits


def paired_items(root, images, source, label, suffix=".jpg"):
    """Items for every image matching the glob `images` (relative to root).

    `source` and `label` are the image's label paths as templates of {dir}, the
    image's folder below the top one (e.g. `train2017`, `train/aachen`), and
    {name}, its file name without `suffix`. No image at all is an error.
    """
    found = files_in(root, images)
    if not found:
        raise DeepLabError(f"--root {root}: no images {images} in it "
                           "(see --help for the expected layout)")
    items = []
    for image in found:
        parts = {"dir": os.path.dirname(image).split(os.sep, 1)[1],
                 "name": os.path.basename(image)[:-len(suffix)]}
        items.append(Item(image, source.format(**parts), label.format(**parts)))
    return items


def cocostuff164k_items(root, label_dir):
    require_folders(root, ["images", "stuffthingmaps_trainval2017"], "COCO-Stuff 164k")
    return {split: paired_items(root, f"images/{split}2017/*.jpg",
                                "stuffthingmaps_trainval2017/{dir}/{name}.png",
                                label_dir + "/{dir}/{name}.png")
            for split in ("train", "val")}


def cityscapes_items(root):
    require_folders(root, ["leftImg8bit", "gtFine"], "Cityscapes")
    return {split: paired_items(root, f"leftImg8bit/{split}/*/*_leftImg8bit.png",
                                "gtFine/{dir}/{name}_gtFine_labelIds.png",
                                LABEL_DIR + "/{dir}/{name}_gtFine_labelTrainIds.png",
                                suffix="_leftImg8bit.png")
            for split in ("train", "val")}


def ade20k_items(root):
    require_folders(root, ["images", "annotations"], "ADEChallengeData2016")
    return {split: paired_items(root, f"images/{folder}/*.jpg", "annotations/{dir}/{name}.png",
                                LABEL_DIR + "/{dir}/{name}.png")
            for split, folder in (("train", "training"), ("val", "validation"))}


def read_cocostuff10k(path):
    """A COCO-Stuff 10k annotations/*.mat -> its label map S (HxW COCO-Stuff ids)."""
    try:
        contents = scipy.io.loadmat(path, variable_names=["S"])
    except Exception as exc:  # noqa: BLE001
        # loadmat fails on damaged files with whatever its parser trips on
        # (ValueError, OSError, MatReadError, ...): all mean "not a readable .mat".
        reason = str(exc) or type(exc).__name__
        hint = ("; an HDF5 (v7.3) file, as COCO-Stuff 10k v1.0 shipped: use v1.1"
                if "HDF" in reason else "")
        raise DeepLabError(f"{path}: not a readable MATLAB file ({reason}){hint}") from None
    if "S" not in contents:
        raise DeepLabError(f"{path}: no label map 'S' in it; is this a COCO-Stuff 10k v1.1 "
                           "annotation?")
    labels = np.asarray(contents["S"])
    if labels.ndim != 2 or labels.size == 0 or not (
            np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise DeepLabError(f"{path}: S is {labels.dtype} {labels.shape}, expected an HxW map "
                           "of class ids")
    if np.issubdtype(labels.dtype, np.floating) and not np.array_equal(labels, np.round(labels)):
        raise DeepLabError(f"{path}: S holds fractional values, not class ids")
    return labels


# NAME -> the `datasets` entry whose names and colours the labels get.
DATASET_OF = {"cocostuff10k": "cocostuff", "cocostuff164k": "cocostuff",
              "cityscapes": "cityscapes", "ade20k": "ade20k", "voc": "voc"}


def resolve_root(name, root):
    if not os.path.isdir(root):
        raise DeepLabError(f"--root {root}: no such folder")
    # ADE20K's archive unpacks to ADEChallengeData2016/: its parent is accepted too.
    inner = os.path.join(root, "ADEChallengeData2016")
    return inner if name == "ade20k" and os.path.isdir(inner) else root


def find_items(name, root, classes):
    """({"train": [Item], "val": [Item]}, the Mapping key) for dataset `name`."""
    if name == "cocostuff10k":
        return cocostuff10k_items(root), name
    if name == "cocostuff164k":
        suffix = "" if classes == 182 else f"_{classes}"
        return cocostuff164k_items(root, LABEL_DIR + suffix), name + suffix
    if name == "cityscapes":
        return cityscapes_items(root), name
    return ade20k_items(root), name


def check_exist(root, paths, what):
    """One-line error naming the first missing file (in order) and how many are missing."""
    missing = [path for path in paths if not os.path.isfile(os.path.join(root, path))]
    if missing:
        raise DeepLabError(f"{len(missing)} of {len(paths)} {what} missing, first: "
                           f"{os.path.join(root, missing[0])}")


def convert_labels(root, items, key, palette):
    """Reads each item's archive label, maps it (MAPPINGS[key]) and writes its PNG."""
    convert = MAPPINGS[key]
    for item in tqdm(items, desc="labels", unit="file", disable=None):
        source = os.path.join(root, item.source)
        values = read_cocostuff10k(source) if source.endswith(".mat") else read_label(source)
        target = os.path.join(root, item.label)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        save_label_png(convert.apply(values, source), target, palette)


def prepare(name, root, list_dir, classes):
    """Labels and lists of one of the archives; prints what it did."""
    splits, key = find_items(name, root, classes)
    items = splits["train"] + splits["val"]
    check_exist(root, [item.image for item in items], "listed images")
    check_exist(root, [item.source for item in items], "labels")
    names, palette = datasets.classes(DATASET_OF[name], MAPPINGS[key].num_classes)
    list_dir = check_writable_dir(list_dir, "--list-dir")
    convert_labels(root, items, key, palette)
    label_root = os.path.join(root, items[0].label.split("/")[0])
    print(f"{name}: train {len(splits['train'])} images, val {len(splits['val'])} images")
    print(f"{len(items)} labels ({len(names)} classes, 255 = ignore) -> {label_root}")
    for split, split_items in splits.items():
        path = os.path.join(list_dir, f"{key}_{split}.txt")
        write_text(path, "".join(f"/{item.image} /{item.label}\n" for item in split_items))
        print(f"{split}: {len(split_items)} lines -> {path}")
    standard = STANDARD_COUNTS[name]
    if (len(splits["train"]), len(splits["val"])) != standard:
        print(f"note: the full {name} release has {standard[0]} train and {standard[1]} val "
              "images; these lists differ (a subset, or another release?)")
    print(f"use --data-dir {os.path.abspath(root)} --num-classes {len(names)} "
          f"--dataset {DATASET_OF[name]}")


def prepare_voc(root, sbd_root, list_dir):
    """VOC + SBD: SegmentationClassAug/ (convert_sbd.py) and voc_train/val.txt lists."""
    import build_voc_lists
    import convert_sbd
    convert_sbd.main(["--voc-root", root, "--sbd-root", sbd_root])
    build_voc_lists.main(["--voc-root", root, "--sbd-root", sbd_root, "--output-dir", list_dir,
                          "--list-prefix", "voc_"])


def main(argv=None):
    args = parse_args(argv)
    if args.name == "folders":
        prepare_folders(args.images, args.labels, args.list_dir, args.list_name,
                        args.val_fraction, args.seed)
    elif args.name == "voc":
        prepare_voc(args.root, args.sbd_root, args.list_dir)
    else:
        prepare(args.name, resolve_root(args.name, args.root), args.list_dir, args.classes)
    return 0


if __name__ == "__main__":
    run(main)
