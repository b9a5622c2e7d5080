"""Errors of the Caffe converter."""

from deeplab_resnet.errors import UserError


class KaffeError(UserError):
    """A prototxt or caffemodel the converter cannot use; the message names the file or layer."""
