"""The datasets DeepLab is trained on: class names and colours, by name or by class count.

Each dataset's facts (its classes in training-index order, its own colour map
where it has one, and the id tables its preparation tool applies):

    voc         PASCAL VOC 2012, 21 classes, VOC's bit-spread colour map
    cocostuff   COCO-Stuff 10k/164k: 182 classes (COCO-Stuff ids 1..182 -> 0..181),
                or the 171 that occur (`COCOSTUFF_UNUSED`, the 11 unused thing ids,
                dropped), in VOC's colour map (COCO-Stuff has no fixed colour table)
    cityscapes  Cityscapes, the 19 train ids, in Cityscapes' own colours
    ade20k      ADE20K SceneParsing (ADEChallengeData2016), 150 classes, in its own colours

Palettes are 256x3 uint8 arrays indexed by the label value: a class's colour at
its index, the ignore label's (255) at the end, VOC's colour map wherever a
dataset has no colour of its own. Pure numpy: no TensorFlow here.
"""

import numpy as np

from deeplab_resnet import defaults
from deeplab_resnet.errors import SettingError

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def voc_colormap(n=256):
    """PASCAL VOC colour map: the bits of the index spread over R, G, B from the top bit down."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_PALETTE = voc_colormap()

# COCO-Stuff ids 1..182 (0 = unlabeled): COCO's 91 thing ids in COCO's order,
# then the 91 stuff classes in alphabetical order. Training index = id - 1.
COCOSTUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "street sign", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "hat", "backpack", "umbrella", "shoe", "eye glasses", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror",
    "dining table", "window", "desk", "toilet", "door", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator",
    "blender", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
    "hair brush", "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet",
    "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes",
    "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence",
    "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog",
    "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill",
    "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud",
    "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform",
    "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug", "salad",
    "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree",
    "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone",
    "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other",
    "wood")
# The 11 COCO thing ids no image is labelled with (training indices, i.e. id - 1):
# street sign, hat, shoe, eye glasses, plate, mirror, window, desk, door,
# blender, hair brush. The 171-class setting (mmsegmentation's) drops them.
COCOSTUFF_UNUSED = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCOSTUFF171_CLASSES = tuple(name for index, name in enumerate(COCOSTUFF_CLASSES)
                             if index not in COCOSTUFF_UNUSED)

# Cityscapes: (label id in *_gtFine_labelIds.png, train id's name, colour); the
# train id is the position. Every other label id is ignored.
CITYSCAPES_TRAIN_IDS = (
    (7, "road", (128, 64, 128)), (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)), (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)), (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)), (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)), (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)), (24, "person", (220, 20, 60)), (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)), (27, "truck", (0, 0, 70)), (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)), (32, "motorcycle", (0, 0, 230)),
    (33, "bicycle", (119, 11, 32)))

# ADE20K SceneParsing, classes 1..150 of its annotations (0 = other, ignored);
# training index = value - 1. Short names (the first of each class's synonyms).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane",
    "grass", "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant",
    "curtain", "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror",
    "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag")
# ADE20K's colour table (the one its tools and mmsegmentation draw with), RRGGBB per class.
ADE20K_COLOURS = (
    "787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07 96053d"
    "787846 08ff33 ff0652 8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0"
    "0907e6 dcdcdc ff095c 7009ff 08ffd6 07ffe0 ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06"
    "ffc207 ff7a08 00ff14 ff0829 ff0599 0633ff eb0cff a09614 00a3ff 8c8c8c fa0a0f 14ff00 1fff00"
    "ff1f00 ffe000 99ff00 0000ff ff4700 00ebff 00adff 1f00ff 0bc8c8 ff5200 00fff5 003dff 00ff70"
    "00ff85 ff0000 ffa300 ff6600 c2ff00 008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00 00ff99"
    "ff5c00 ff00ff ff00f5 ff0066 ffad00 ff0014 ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2 00ff52"
    "000aff 0070ff 3300ff 00c2ff 007aff 00ffa3 ff9900 00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00"
    "08b8aa 8500ff 00ff5c b800ff ff001f 00b8ff 00d6ff ff0070 5cff00 00e0ff 70e0ff 46b8a0 a300ff"
    "9900ff 47ff00 ff00a3 ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500 0abed4 d6ff00"
    "00ccff 1400ff ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff 4700ff 7a00ff 00ffb8"
    "005cff b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff")


def _palette(colours, ignore_colour):
    """256x3 uint8, read-only: `colours` at indices 0.., `ignore_colour` at 255, VOC's
    elsewhere."""
    palette = VOC_PALETTE.copy()
    colours = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
    palette[:len(colours)] = colours
    palette[defaults.IGNORE_LABEL] = ignore_colour
    palette.setflags(write=False)
    return palette


# name -> {class count: (class names, palette)}; the first entry is the default.
DATASETS = {
    "voc": {len(VOC_CLASSES): (VOC_CLASSES, VOC_PALETTE)},
    "cocostuff": {len(COCOSTUFF_CLASSES): (COCOSTUFF_CLASSES, VOC_PALETTE),
                  len(COCOSTUFF171_CLASSES): (COCOSTUFF171_CLASSES, VOC_PALETTE)},
    "cityscapes": {len(CITYSCAPES_TRAIN_IDS): (
        tuple(name for _, name, _ in CITYSCAPES_TRAIN_IDS),
        # Cityscapes draws unlabelled pixels black.
        _palette([colour for _, _, colour in CITYSCAPES_TRAIN_IDS], (0, 0, 0)))},
    "ade20k": {len(ADE20K_CLASSES): (
        ADE20K_CLASSES,
        # ADE20K draws "other" (its 0, ignored here) black.
        _palette(np.frombuffer(bytes.fromhex(ADE20K_COLOURS), np.uint8), (0, 0, 0)))},
}


def classes(dataset=None, num_classes=None, names=None):
    """The class names and colours of a model's classes.

    Args:
        dataset: a key of DATASETS ("voc", "cocostuff", "cityscapes", "ade20k"),
            or None to recognise the dataset by `num_classes`.
        num_classes: the model's class count, or None for the dataset's default.
        names: the user's own class names, which win over the dataset's (their
            count is checked against `num_classes`).
    Returns:
        (list of num_classes names, 256x3 uint8 palette). A class count no
        dataset has gives `class_<i>` names and VOC's colours.
    Raises:
        SettingError (field "dataset", "class_names" or "num_classes") for an
        unknown dataset, a class count the dataset does not have, or a wrong
        number of names.

    Example:
        >>> names, palette = classes("cityscapes")
        >>> names[0], palette[0].tolist()
        ('road', [128, 64, 128])
        >>> classes(num_classes=150)[0][:3]
        ['wall', 'building', 'sky']
    """
    if dataset is None and num_classes is None:
        raise SettingError("{num_classes} or {dataset} is needed to name the classes",
                           "num_classes", "dataset")
    if dataset is not None:
        variants = DATASETS.get(dataset)
        if variants is None:
            raise SettingError(f"{{dataset}} '{dataset}': unknown; choose from "
                               f"{', '.join(DATASETS)}", "dataset")
        if num_classes is None:
            num_classes = next(iter(variants))
        if num_classes not in variants:
            counts = " or ".join(str(count) for count in variants)
            raise SettingError(f"{{dataset}} {dataset} has {counts} classes; the model has "
                               f"{num_classes}", "dataset")
        dataset_names, palette = variants[num_classes]
    else:
        dataset_names, palette = by_class_count(num_classes)
    if names is not None:
        if len(names) != num_classes:
            raise SettingError(f"{{class_names}} gives {len(names)} names for a model with "
                               f"{num_classes} classes", "class_names")
        dataset_names = names
    return list(dataset_names), palette


def by_class_count(num_classes):
    """(names, palette) of the dataset with `num_classes` classes, else `class_<i>` and VOC's."""
    for variants in DATASETS.values():
        if num_classes in variants:
            return variants[num_classes]
    return tuple(f"class_{i}" for i in range(num_classes)), VOC_PALETTE
