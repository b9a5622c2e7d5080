"""The 2017 TF port's (tensorflow-deeplab-resnet) weights files, in this project's terms.

Its users hold `deeplab_resnet.ckpt` / `deeplab_resnet_init.ckpt` (V1 single-file
checkpoints written by its npy2ckpt.py) and training snapshots `model.ckpt-N` (V2,
with `<var>/Momentum` optimizer slots). Both are read by TensorFlow's checkpoint
reader; only the names differ: caffe-tensorflow's `<conv>/weights|biases` (HWIO, as
here) and slim.batch_norm's `<bn>/moving_mean|moving_variance|gamma|beta`. Its
variances are Caffe's (it ran them with epsilon 1e-3, this model with Caffe's 1e-5),
so the values are taken as they are. It also wrote weights as pickled `.npy`
dicts, which are never loaded: unpickling runs code from the file.
"""

from deeplab_resnet.errors import BadFileError

_CONV_LEAVES = ("weights", "biases")
_BN_LEAVES = {"moving_mean": "mean", "moving_variance": "variance", "gamma": "scale",
              "beta": "offset"}


def is_port_checkpoint(keys):
    """Whether checkpoint keys are the port's: slim BatchNorm statistics, no `params/` of ours."""
    keys = list(keys)
    return (any(k.endswith("/moving_mean") for k in keys)
            and not any(k.startswith("params/") for k in keys))


def our_name(key):
    """This project's name for a port variable; None for the rest (optimizer slots, counters)."""
    parts = key.split("/")
    if len(parts) != 2:
        return None
    layer, leaf = parts
    if leaf in _CONV_LEAVES:
        return key
    if leaf in _BN_LEAVES:
        return f"{layer}/{_BN_LEAVES[leaf]}"
    return None


def name_map(keys):
    """{our name: port key} for the model variables among a port checkpoint's keys."""
    return {our_name(k): k for k in keys if our_name(k) is not None}


def refuse_npy(path):
    """The one-line refusal of a `.npy` given as weights."""
    raise BadFileError(f"{path}: .npy weights (the 2017 port's convert.py output) are pickled "
                       "Python objects and are not loaded: unpickling runs code from the file. "
                       "Convert the .caffemodel instead (deeplab_resnet.convert, the "
                       "deeplab-convert command), or give the port's .ckpt",
                       path=path)
