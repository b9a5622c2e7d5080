"""The PASCAL VOC test server's layout for submitted predictions."""

import os

from deeplab_resnet.data.datasets import VOC_CLASSES
from deeplab_resnet.errors import SettingError


# The VOC test server's layout of a submission ("comp6": trained on any data), under its root.
VOC_SUBMISSION_FOLDER = os.path.join("results", "VOC2012", "Segmentation", "comp6_test_cls")


def voc_submission_folder(root, num_classes):
    """Where the VOC test server wants the predicted palette PNGs, under `root`.

    Raises:
        SettingError for a model that does not have VOC's 21 classes.
    """
    if num_classes != len(VOC_CLASSES):
        raise SettingError(f"{{voc_submission}}: the VOC test server scores VOC's "
                           f"{len(VOC_CLASSES)} classes; this model has {num_classes}",
                           "voc_submission")
    return os.path.join(root, VOC_SUBMISSION_FOLDER)
