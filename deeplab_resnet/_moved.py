"""Old module paths of the flat package (0.1), kept importable for one release with a warning.

Code written against the flat layout (`from deeplab_resnet import shapes`, TF2 code emitted by an
older convert.py: `from deeplab_resnet import layers`) keeps working: importing an old path gives
the module at its new place and a DeprecationWarning naming it.
"""

import importlib
import importlib.abc
import importlib.util
import warnings

MOVED = {
    "deeplab_resnet.layers": "deeplab_resnet.model.layers",
    "deeplab_resnet.checkpoint": "deeplab_resnet.weights.checkpoint",
    "deeplab_resnet.shapes": "deeplab_resnet.data.shapes",
    "deeplab_resnet.datasets": "deeplab_resnet.data.datasets",
    "deeplab_resnet.evaluation": "deeplab_resnet.predict.evaluation",
    "deeplab_resnet.crf": "deeplab_resnet.predict.crf",
    "deeplab_resnet.segmenter": "deeplab_resnet.predict.segmenter",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new):
        self.new = new

    def create_module(self, spec):
        warnings.warn(f"{spec.name} is now {self.new}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new)

    def exec_module(self, module):
        """Nothing to run: the module at the new path is already executed."""


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths of `MOVED` (after the ordinary finders, which find no such file)."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        return None if new is None else importlib.util.spec_from_loader(fullname, _Alias(new))
