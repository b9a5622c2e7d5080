"""Caffe net -> this project's formats: prototxt (+ caffemodel) -> checkpoint, .npz and/or
TF2 code. What `deeplab_resnet.convert` and convert.py run."""

import dataclasses
import os

from deeplab_resnet.files import atomic_path, save_npz
from deeplab_resnet.weights import caffe
from deeplab_resnet.weights import checkpoint
from deeplab_resnet.errors import SettingError

_OUTPUTS = ("ckpt_path", "npz_path", "code_path")


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What `convert` read and wrote.

    Attributes:
        variant: the DeepLab variant recognised in the net ("resnet101", ...),
            None for another net (e.g. an ImageNet ResNet).
        num_classes: the DeepLab head's class count, None for another net.
        num_tensors: number of parameter tensors of the net.
        ckpt_path, npz_path, code_path: the files written (None when not asked for).
    """
    variant: str = None
    num_classes: int = None
    num_tensors: int = 0
    ckpt_path: str = None
    npz_path: str = None
    code_path: str = None


def save_code(code, path):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(code)


def _make_parent(path, field):
    folder = os.path.dirname(os.path.abspath(str(path)))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise SettingError(f"{{{field}}} {path}: cannot create folder {folder} ({exc.strerror})",
                           field) from None


def _check_request(ckpt_path, npz_path, code_path, caffemodel):
    if not (ckpt_path or npz_path or code_path):
        raise SettingError("nothing to do: give {ckpt_path}, {npz_path} or {code_path}",
                           *_OUTPUTS)
    if (ckpt_path or npz_path) and not caffemodel:
        raise SettingError("{ckpt_path} and {npz_path} need {caffemodel}",
                           "ckpt_path", "npz_path", "caffemodel")


def convert(prototxt, caffemodel=None, *, ckpt_path=None, npz_path=None, code_path=None,
            class_names=None, classes=None):
    """Converts a Caffe net (no Caffe installation needed).

    Everything is read and checked before anything is written; each file is
    then written atomically, so a failure leaves no partial output.

    Args:
        prototxt: the net's deploy prototxt (e.g. `misc/deploy.prototxt`).
        caffemodel: its weights; needed for `ckpt_path` and `npz_path`.
        ckpt_path: checkpoint prefix to write; a DeepLab net's records its
            variant and class count, so it loads with no other setting.
        npz_path: `.npz` of plain arrays to write (same names and values).
        code_path: `.py` file to write: TF2 code of the net.
        class_names: one name per class, recorded in the checkpoint (a DeepLab net's);
            evaluation and inference show them.
        classes: a classes file (path, or a `deeplab_resnet.data.classes.Classes`): its
            names and colours are recorded in the checkpoint (masks and overlays are
            drawn in them); its class count must be the net's.
    Returns:
        a `Conversion`.
    Raises:
        SettingError when no output is asked for, or weights are asked for
        without `caffemodel`; BadFileError for an unreadable or mismatching
        prototxt or caffemodel; an OSError naming the file when a write fails.

    Example:
        >>> done = deeplab_resnet.convert("deploy.prototxt", "train_iter_20000.caffemodel",
        ...                               ckpt_path="ckpt/voc12")
        >>> done.variant, done.num_classes
        ('resnet101', 21)
    """
    _check_request(ckpt_path, npz_path, code_path, caffemodel)
    net = caffe.load_net(prototxt)
    params = caffe.read_weights(net, caffemodel) if caffemodel else None
    code = caffe.emit_code(net) if code_path else None
    variant, num_classes = net.deeplab or (None, None)
    names, colours = checkpoint.recorded_classes(classes, class_names, num_classes)
    # Everything is read and checked: only now create folders and write.
    for path, field in zip((ckpt_path, npz_path, code_path), _OUTPUTS):
        if path:
            _make_parent(path, field)
    if ckpt_path:
        checkpoint.save_params(params, ckpt_path, variant, num_classes, names, colours)
    if npz_path:
        save_npz(params, npz_path)
    if code_path:
        save_code(code, code_path)
    return Conversion(variant, num_classes, len(net.param_shapes()),
                      *(None if p is None else str(p) for p in (ckpt_path, npz_path, code_path)))
