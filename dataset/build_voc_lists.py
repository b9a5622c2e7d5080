"""Builds the PASCAL VOC 2012 list files used for training and evaluation.

With SBD (the standard DeepLab setup):

    train.txt  train_aug = (VOC train + SBD train + SBD val) - VOC val   10,582 images
    val.txt    VOC2012 val                                               1,449 images

Without --sbd-root it writes `train_voc.txt` (VOC2012 train only, 1,464
images) and `val.txt`, labelled from VOC's own SegmentationClass/.

Each line is `/JPEGImages/NAME.jpg /LABELS/NAME.png`, relative to the VOC2012
folder, which is what training and evaluation take as --data-dir; LABELS is
SegmentationClassAug with SBD, SegmentationClass without (or --label-dir).
Names are sorted, so the same inputs always give byte-identical lists.

    python dataset/build_voc_lists.py --voc-root VOCdevkit/VOC2012 \\
        --sbd-root benchmark_RELEASE/dataset
"""

import os

from _common import (ArgumentParser, DATASET_DIR, DeepLabError, check_writable_dir, read_names,
                     resolve_sbd_root,
                     resolve_voc_root, run, write_text)

AUG_LABEL_DIR = "SegmentationClassAug"
VOC_LABEL_DIR = "SegmentationClass"
# The published split sizes; other counts are reported, not refused, since a
# user may deliberately build lists from another release or a subset.
STANDARD_TRAIN_AUG = 10582
STANDARD_VAL = 1449


def parse_args(argv):
    parser = ArgumentParser(
        description="Build VOC2012 list files: train.txt (train_aug, needs SBD) or "
                    "train_voc.txt (no SBD), and val.txt.")
    parser.add_argument("--voc-root", required=True,
                        help="the VOCdevkit/VOC2012 folder (the --data-dir for training)")
    parser.add_argument("--sbd-root", default=None,
                        help="SBD's benchmark_RELEASE/dataset folder; without it only VOC2012 "
                             "train is used and train_voc.txt is written instead of train.txt")
    parser.add_argument("--output-dir", default=DATASET_DIR,
                        help="where the list files go (default: this dataset/ folder)")
    parser.add_argument("--label-dir", default=None,
                        help=f"label folder inside --voc-root named in the lists (default: "
                             f"{AUG_LABEL_DIR} with --sbd-root, {VOC_LABEL_DIR} without)")
    parser.add_argument("--list-prefix", default="",
                        help="put this before the list files' names (prepare.py voc: voc_)")
    parser.add_argument("--skip-label-check", action="store_true",
                        help="do not require the label PNGs to exist yet")
    return parser.parse_args(argv)


def train_aug_names(voc_train, voc_val, sbd_train, sbd_val):
    """(VOC train | SBD train | SBD val) - VOC val, sorted: the train_aug split."""
    return sorted((set(voc_train) | set(sbd_train) | set(sbd_val)) - set(voc_val))


def list_lines(names, label_dir):
    return "".join(f"/JPEGImages/{name}.jpg /{label_dir}/{name}.png\n" for name in names)


def check_files_exist(voc_root, names, folder, extension, hint):
    """One-line error naming the first missing file (in list order) and how many are missing."""
    missing = [name for name in names
               if not os.path.isfile(os.path.join(voc_root, folder, name + extension))]
    if missing:
        first = os.path.join(voc_root, folder, missing[0] + extension)
        raise DeepLabError(f"{len(missing)} of {len(names)} listed files missing in "
                        f"{os.path.join(voc_root, folder)}, first: {first}{hint}")


def main(argv=None):
    args = parse_args(argv)
    voc_root = resolve_voc_root(args.voc_root)
    sbd_root = resolve_sbd_root(args.sbd_root) if args.sbd_root else None
    label_dir = (args.label_dir or (AUG_LABEL_DIR if sbd_root else VOC_LABEL_DIR)).strip("/")
    # List lines are split on whitespace, so a label folder with a space would
    # be read back as a broken line.
    if not label_dir or any(c.isspace() for c in label_dir):
        raise DeepLabError(f"--label-dir '{args.label_dir}': must be a folder name without spaces")

    sets_dir = os.path.join(voc_root, "ImageSets", "Segmentation")
    voc_train = read_names(os.path.join(sets_dir, "train.txt"), "VOC train list")
    voc_val = read_names(os.path.join(sets_dir, "val.txt"), "VOC val list")
    val = sorted(set(voc_val))
    if sbd_root:
        sbd_train = read_names(os.path.join(sbd_root, "train.txt"), "SBD train list")
        sbd_val = read_names(os.path.join(sbd_root, "val.txt"), "SBD val list")
        train = train_aug_names(voc_train, voc_val, sbd_train, sbd_val)
        train_file = args.list_prefix + "train.txt"
    else:
        train = sorted(set(voc_train) - set(voc_val))
        train_file = args.list_prefix + "train_voc.txt"

    everything = sorted(set(train) | set(val))
    check_files_exist(voc_root, everything, "JPEGImages", ".jpg",
                      " (is --voc-root the full VOC2012 trainval release?)")
    if not args.skip_label_check:
        hint = (" (run dataset/convert_sbd.py first, or pass --skip-label-check)"
                if label_dir == AUG_LABEL_DIR else " (or pass --skip-label-check)")
        check_files_exist(voc_root, everything, label_dir, ".png", hint)

    output_dir = check_writable_dir(args.output_dir, "--output-dir")
    train_path = os.path.join(output_dir, train_file)
    val_path = os.path.join(output_dir, args.list_prefix + "val.txt")
    write_text(train_path, list_lines(train, label_dir))
    write_text(val_path, list_lines(val, label_dir))

    if sbd_root:
        print(f"VOC2012 train {len(set(voc_train))}, val {len(val)}; "
              f"SBD train {len(set(sbd_train))}, val {len(set(sbd_val))}")
        print(f"train_aug = (VOC train + SBD train + SBD val) - VOC val: "
              f"{len(train)} images -> {train_path}")
    else:
        print(f"VOC2012 train {len(set(voc_train))}, val {len(val)} (no SBD)")
        print(f"VOC train - VOC val: {len(train)} images -> {train_path}")
    print(f"VOC val: {len(val)} images -> {val_path}")
    if sbd_root and (len(train) != STANDARD_TRAIN_AUG or len(val) != STANDARD_VAL):
        print(f"note: the standard split has {STANDARD_TRAIN_AUG} train_aug and {STANDARD_VAL} "
              "val images; these lists differ (another VOC or SBD release?)")
    print(f"labels: {label_dir}/; use --data-dir {os.path.abspath(voc_root)}")
    return 0


if __name__ == "__main__":
    run(main)
