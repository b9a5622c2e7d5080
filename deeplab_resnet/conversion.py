"""convert.py's pipeline: prototxt (+ caffemodel) -> checkpoint, .npz and/or TF2 code."""

import os

from deeplab_resnet import caffe, checkpoint, utils
from deeplab_resnet.errors import SettingError


def save_code(code, path):
    with utils.atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(code)


def _make_parent(path, field):
    folder = os.path.dirname(os.path.abspath(str(path)))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise SettingError(f"{{{field}}} {path}: cannot create folder {folder} ({exc.strerror})",
                           field) from None


def convert(def_path, caffemodel=None, ckpt_path=None, data_output_path=None,
            code_output_path=None):
    """Converts a Caffe net; what convert.py runs.

    Args:
        def_path: deploy prototxt.
        caffemodel: weights; required for `ckpt_path` and `data_output_path`.
        ckpt_path: checkpoint prefix to write (deeplab_resnet.checkpoint format;
            DeepLab nets also record variant and class count).
        data_output_path: `.npz` file to write (same names and values).
        code_output_path: `.py` file to write (TF2 code of the net).
    Returns:
        the `caffe.CaffeNet`.
    All files are written only after everything was read and checked, each
    atomically, so a failure leaves no partial output.
    """
    outputs = ("ckpt_path", "data_output_path", "code_output_path")
    if not (ckpt_path or data_output_path or code_output_path):
        raise SettingError("nothing to do: give {ckpt_path}, {data_output_path} or "
                           "{code_output_path}", *outputs)
    if (ckpt_path or data_output_path) and not caffemodel:
        raise SettingError("{ckpt_path} and {data_output_path} need {caffemodel}",
                           "ckpt_path", "data_output_path", "caffemodel")
    net = caffe.load_net(def_path)
    params = caffe.read_weights(net, caffemodel) if caffemodel else None
    code = caffe.emit_code(net) if code_output_path else None
    # Everything is read and checked: only now create folders and write.
    for path, field in zip((ckpt_path, data_output_path, code_output_path), outputs):
        if path:
            _make_parent(path, field)
    if ckpt_path:
        variant, num_classes = net.deeplab or (None, None)
        checkpoint.save_params(params, ckpt_path, variant, num_classes)
    if data_output_path:
        utils.save_npz(params, data_output_path)
    if code_output_path:
        save_code(code, code_output_path)
    return net
