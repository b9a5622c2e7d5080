"""The converter's own error type (kaffe depends on nothing of deeplab_resnet)."""


class KaffeError(Exception):
    """A prototxt or caffemodel the converter cannot use; the message names the file or layer."""


def first_line(exc):
    """The first line of an exception's message (its type name when empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
