"""Fusion: a layer with the in-line layers that only post-process its output.

`fuse` groups Convolution -> BatchNorm -> Scale -> ReLU (and shorter chains)
into `Step`s, which fixes both the parameter names of the converted weights
(`kaffe.transforms`) and the statements of emitted code (`kaffe.emit`).
"""

import dataclasses

from kaffe.graph import Layer


@dataclasses.dataclass
class Step:
    """A layer and the in-line layers fused into it.

    `bn`/`scale`/`relu` are Layers whose only input is the previous member's
    output and which are that output's only reader, so no other layer can
    observe the intermediate value; `top` is the blob the whole step writes.
    """
    layer: Layer
    bn: Layer = None
    scale: Layer = None
    relu: Layer = None

    @property
    def members(self):
        return [m for m in (self.layer, self.bn, self.scale, self.relu) if m is not None]

    @property
    def tops(self):
        return self.members[-1].tops

    @property
    def bottoms(self):
        return self.layer.bottoms


def _readers(graph):
    """For each layer, the indices of the layers reading each of its top versions."""
    current = {name: ("input", name) for name in graph.inputs}
    readers = {}
    versions = []
    for index, layer in enumerate(graph.layers):
        bottoms = []
        for bottom in layer.bottoms:
            version = current[bottom]
            readers.setdefault(version, []).append(index)
            bottoms.append(version)
        tops = []
        for t, top in enumerate(layer.tops):
            version = (index, t)
            current[top] = version
            tops.append(version)
        versions.append((bottoms, tops))
    return versions, readers


def fuse(graph):
    """Groups the layers of `graph` into `Step`s (Convolution + BatchNorm + Scale + ReLU, ...)."""
    versions, readers = _readers(graph)
    layer_list = graph.layers

    def sole_follower(index, wanted):
        """The layer that alone reads layer `index`'s single output, if of type `wanted`."""
        if len(layer_list[index].tops) != 1:
            return None
        users = readers.get(versions[index][1][0], [])
        if len(users) != 1:
            return None
        follower = layer_list[users[0]]
        if follower.type != wanted or len(follower.bottoms) != 1:
            return None
        return users[0]

    steps, taken = [], set()
    for index, layer in enumerate(layer_list):
        if index in taken:
            continue
        step, last = Step(layer), index
        if layer.type == "Convolution":
            nxt = sole_follower(last, "BatchNorm")
            if nxt is not None:
                step.bn, last = layer_list[nxt], nxt
                taken.add(nxt)
        if layer.type == "BatchNorm" or step.bn is not None:
            nxt = sole_follower(last, "Scale")
            if nxt is not None:
                step.scale, last = layer_list[nxt], nxt
                taken.add(nxt)
        if layer.type in ("Convolution", "BatchNorm", "Scale", "Eltwise", "InnerProduct"):
            nxt = sole_follower(last, "ReLU")
            if nxt is not None:
                step.relu, last = layer_list[nxt], nxt
                taken.add(nxt)
        steps.append(step)
    return steps


def bn_layer(step):
    """The BatchNorm layer of a step (fused after a conv, or the step itself)."""
    if step.layer.type == "BatchNorm":
        return step.layer
    return step.bn
