"""Training compared with real Caffe's solver: run train.py, compare its update with Caffe's.

Used by tests/test_caffe_training.py (golden cases, no Caffe needed) and by
tests/tools/check_training_with_caffe.py (runs real Caffe). The update of a
tensor is (after - init); its error is ||ours - caffe|| / ||caffe - init||.
"""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from tensorflow.core.util import event_pb2

from deeplab_resnet.weights import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_args(deploy, init, data_dir, data_list, snapshot_dir, size, batch, micro, updates,
               base_lr, variant, num_classes, weight_decay=5e-4):
    """train.py's arguments to train from a caffemodel, without augmentation.

    The crop is the whole image (`size` = the image size), so no random offset
    and no padding; DeepLab's solver settings otherwise.
    """
    return ["--model", variant, "--num-classes", str(num_classes), "--prototxt", str(deploy),
            "--restore-from", str(init), "--data-dir", str(data_dir),
            "--data-list", str(data_list), "--input-size", f"{size[0]},{size[1]}",
            "--batch-size", str(batch), "--grad-update-every", str(micro),
            "--num-steps", str(updates), "--learning-rate", repr(base_lr),
            "--weight-decay", repr(weight_decay), "--snapshot-dir", str(snapshot_dir),
            "--save-num-images", "0"]


def run_train(*args, **kwargs):
    """train.py (the real script, a subprocess) with `train_args(*args, **kwargs)`.
    Returns the process."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), *train_args(*args, **kwargs)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=1800,
                          check=False)


def logged_losses(snapshot_dir):
    """The per-update `loss` scalars of the TensorBoard events in `snapshot_dir`, in order."""
    losses = {}
    for name in sorted(os.listdir(snapshot_dir)):
        if not name.startswith("events.out.tfevents"):
            continue
        for record in tf.data.TFRecordDataset(os.path.join(snapshot_dir, name)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == "loss":
                    losses[event.step] = float(tf.make_ndarray(value.tensor))
    return [losses[k] for k in sorted(losses)]


def caffe_layout(name, array):
    """One of our parameters in Caffe's layout: HWIO convolution weights -> (out, in, kh, kw)."""
    return array.transpose(3, 2, 0, 1) if name.endswith("/weights") else array


def caffe_key(name):
    """Our parameter name -> the `<layer>/<blob index>` key of Caffe's blobs."""
    layer, kind = name.rsplit("/", 1)
    return f"{layer}/{ {'weights': 0, 'biases': 1}[kind] }"


def compared_names(ours, caffe_after):
    """Our convolution weights and biases that Caffe's blobs hold (BatchNorm/Scale are frozen)."""
    return [n for n in ours if n.endswith(("/weights", "/biases")) and caffe_key(n) in caffe_after]


def update_errors(init_blobs, caffe_after, ours_after, names):
    """Per-tensor update errors, and all tensors together.

    Args:
        init_blobs, caffe_after: {caffe key: Caffe-layout array}.
        ours_after: {our name: array} (our layout).
        names: our trainable parameter names to compare.
    Returns:
        ({name: error}, overall error).
    """
    errors, num, den = {}, 0.0, 0.0
    for name in names:
        key = caffe_key(name)
        init = init_blobs[key].astype(np.float64)
        theirs = caffe_after[key].astype(np.float64) - init
        ours = caffe_layout(name, ours_after[name]).astype(np.float64) - init
        diff, size = np.sum((ours - theirs) ** 2), np.sum(theirs ** 2)
        errors[name] = float(np.sqrt(diff / max(size, 1e-300)))
        num, den = num + diff, den + size
    return errors, float(np.sqrt(num / den))


def caffemodel_blobs(path):
    """{`<layer>/<blob index>`: array} of a caffemodel, in Caffe's layout."""
    from kaffe import reader, transforms

    model = reader.read_caffemodel(str(path))
    blobs = {}
    for proto in list(model.layer) + list(model.layers):
        for i, blob in enumerate(proto.blobs):
            blobs[f"{proto.name}/{i}"], _ = transforms.blob_array(blob, f"{proto.name}/{i}")
    return blobs


def trained_params(snapshot_dir):
    """{our name: array} of the latest checkpoint in `snapshot_dir`."""
    return checkpoint.read_params(tf.train.latest_checkpoint(str(snapshot_dir)))


def is_head(name):
    return name.startswith("fc1_voc12")
