"""Reading `.prototxt` (text) and `.caffemodel` (binary) files into `NetParameter`s."""

import re

from google.protobuf import message as pb_message
from google.protobuf import text_format

from kaffe import caffe_pb
from kaffe.errors import KaffeError, first_line

# Parameter messages of the layers we run. An unknown field inside one of them
# could change what the layer computes, so it is an error; elsewhere (a loss
# layer's `loss_param`, a data layer's `transform_param`, ...) an unknown field
# is skipped: such layers are refused by type later anyway, or the field only
# matters to training.
_STRICT_MESSAGES = {
    "ConvolutionParameter", "PoolingParameter", "BatchNormParameter", "ScaleParameter",
    "ReLUParameter", "EltwiseParameter", "InnerProductParameter", "SoftmaxParameter",
    "ConcatParameter", "DropoutParameter", "InputParameter", "BlobShape",
}
_UNKNOWN_FIELD = re.compile(r'Message type "caffe\.(\w+)" has no field named "(\w+)"')


def _read(path, mode):
    path = str(path)
    try:
        with open(path, mode) as f:
            return f.read()
    except FileNotFoundError:
        raise KaffeError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise KaffeError(f"{path}: is a folder, not a file") from None
    except UnicodeDecodeError:
        raise KaffeError(f"{path}: not a text prototxt (binary data; a .caffemodel?)") from None
    except OSError as exc:
        raise KaffeError(f"{path}: cannot read ({exc.strerror})") from None


def parse_prototxt_text(text, source="<prototxt>"):
    """Parses prototxt text into a `NetParameter`.

    Args:
        text: the text format net definition.
        source: file name used in error messages.
    Raises:
        KaffeError: syntax error, or an unknown field inside a supported layer's
            parameters (one line, naming `source` and the line).
    """
    net = caffe_pb.NetParameter()
    try:
        text_format.Parse(text, net)
        return net
    except text_format.ParseError as exc:
        match = _UNKNOWN_FIELD.search(str(exc))
        if match is None or match.group(1) in _STRICT_MESSAGES:
            raise KaffeError(f"{source}: prototxt syntax error: {first_line(exc)}") from None
    # Only unknown fields outside the supported layers' parameters: harmless, skip them.
    net = caffe_pb.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=True)
    except text_format.ParseError as exc:
        raise KaffeError(f"{source}: prototxt syntax error: {first_line(exc)}") from None
    return net


def read_prototxt(path):
    """Reads a text `.prototxt` file into a `NetParameter`."""
    return parse_prototxt_text(_read(path, "r"), str(path))


def read_caffemodel(path):
    """Reads a binary `.caffemodel` into a `NetParameter` (layers with their blobs).

    Raises:
        KaffeError: missing, empty, truncated or not-a-caffemodel file.
    """
    path = str(path)
    data = _read(path, "rb")
    if not data:
        raise KaffeError(f"{path}: empty file, not a caffemodel")
    net = caffe_pb.NetParameter()
    try:
        net.ParseFromString(data)
    except (pb_message.DecodeError, RuntimeError, ValueError) as exc:
        raise KaffeError(f"{path}: not a valid caffemodel (truncated or corrupt: "
                         f"{first_line(exc)})") from None
    if not len(net.layer) and not len(net.layers):
        raise KaffeError(f"{path}: not a caffemodel (no layers found)")
    return net


