"""A prototxt as a checked net, and a caffemodel as TF-layout weights for it."""

import dataclasses

from kaffe import fusion, reader, transforms
from kaffe import graph as graph_mod


@dataclasses.dataclass
class Net:
    """A net read from a prototxt.

    Attributes:
        graph, steps: the shape-checked graph and its fused steps.
    """
    graph: object
    steps: list

    def param_shapes(self):
        return transforms.param_shapes(self.steps)


def parse_net(def_path=None, text=None, source=None):
    """(graph, steps) of a prototxt given as a file or as text.

    Args:
        def_path: prototxt file.
        text: prototxt text (instead of a file); `source` names it in messages.
    Raises:
        KaffeError: unreadable file, syntax error, unsupported or inconsistent layer.
    """
    if text is None:
        net = reader.read_prototxt(def_path)
        source = str(def_path)
    else:
        source = source or "<prototxt>"
        net = reader.parse_prototxt_text(text, source)
    graph = graph_mod.build_graph(net, source)
    return graph, fusion.fuse(graph)


def load_net(def_path=None, text=None, source=None):
    """Parses and checks a prototxt given as a file or as text (see `parse_net`)."""
    return Net(*parse_net(def_path, text, source))


def read_weights(net, path, parsed=None, fold_eps=None):
    """{name: TF-layout array} for a net from its caffemodel.

    Args:
        net: `load_net(...)`.
        path: the caffemodel (read unless `parsed`, its `NetParameter`, is given).
        fold_eps: epsilon to fold BatchNorm variances to (None: keep them).
    """
    if parsed is None:
        parsed = reader.read_caffemodel(path)
    blobs = transforms.layer_blobs(net.graph, parsed, str(path))
    return transforms.make_params(net.steps, blobs, fold_eps=fold_eps)
