"""One opened weights file, checked against the network before any value is used.

`checkpoint.open_weights` opens a checkpoint, an `.npz` or a caffemodel once into a
`WeightsFile`: the file actually read, its format, the tensors it holds in the model's
naming scheme (names and shapes, values read on demand), and the variant, class count
and class names it records, or that its tensors imply. Checked, each failure a
one-line `BadFileError` naming the file and the tensor:

* as the file is opened: `meta/model` must name a known variant, `meta/num_classes`
  must be a sane count that agrees with the head's shape, `meta/class_names` must
  hold that many names, and the tensors must be those of the recorded variant;
* before tensors are read for a model (`WeightsFile.params_for`): every tensor must
  have the shape the architecture gives it, and a DeepLab weights file (one holding
  the head) may hold no tensor the architecture does not name (checkpoints and `.npz`;
  caffemodels keep other nets' layers, which are ignored);
* as each value is read: it must be finite floating point.
"""

import dataclasses
import functools

import numpy as np

from deeplab_resnet.model import arch as arch_lib
from deeplab_resnet.errors import BadFileError, SettingError

HEAD_LAYER = f"{arch_lib.HEAD_PREFIX}_c0"
HEAD_WEIGHTS = arch_lib.param_name(HEAD_LAYER, arch_lib.WEIGHTS)
# A class count above this in `meta/num_classes` is garbage, not a dataset: refused
# before a head of that size is built (ResNet-101's would need 300 MB per 1000 classes).
MAX_CLASSES = 65536


def infer_meta(names):
    """(variant, num_classes) of weights that do not record them, from their parameters.

    Args:
        names: {parameter name: shape}.
    Returns:
        the variant whose backbone layers are all present (None if none is), and the
        head's class count (None without a DeepLab head, e.g. an ImageNet ResNet).
    """
    weights = [n for n in names if arch_lib.param_kind(n) == arch_lib.WEIGHTS]
    variant = arch_lib.infer_variant(n[: -len("/" + arch_lib.WEIGHTS)] for n in weights)
    head = names.get(HEAD_WEIGHTS)
    return variant, (int(head[-1]) if head is not None else None)


def recorded_meta(path, variant, num_classes, class_names, class_colours=None):
    """The checked (variant, num_classes, class_names, class_colours) a file records.

    Args:
        path: the file, for messages.
        variant: `meta/model` as stored (bytes, or anything else a corrupt file holds).
        num_classes: `meta/num_classes` as stored.
        class_names: `meta/class_names` as stored, None when absent.
        class_colours: `meta/class_colours` as stored (Cx3 integers 0..255), None when absent.
    Raises:
        BadFileError: an unknown variant, a class count that is not an integer in
            1..MAX_CLASSES, class names that are not that many strings, or class
            colours that are not that many RGB triples.
    """
    name = variant.decode("utf-8", "replace") if isinstance(variant, bytes) else None
    if name not in arch_lib.VARIANTS:
        shown = (repr(name) if name is not None else str(np.asarray(variant)))[:60]
        raise BadFileError(f"{path}: meta/model {shown} is not a known model (one of "
                           f"{', '.join(arch_lib.VARIANTS)}): corrupt checkpoint?", path=path)
    count = np.asarray(num_classes)
    if count.shape != () or count.dtype.kind not in "iu" or not 1 <= int(count) <= MAX_CLASSES:
        raise BadFileError(f"{path}: meta/num_classes {str(num_classes)[:40]} is not a class "
                           f"count (an integer in 1..{MAX_CLASSES}): corrupt checkpoint?",
                           path=path)
    return (name, int(count), _recorded_names(path, class_names, int(count)),
            _recorded_colours(path, class_colours, int(count)))


def _recorded_names(path, class_names, count):
    if class_names is None:
        return None
    names = np.asarray(class_names)
    if names.ndim != 1 or names.dtype.kind not in "SO" or len(names) != count:
        raise BadFileError(f"{path}: meta/class_names holds {names.size} names of dtype "
                           f"{names.dtype} for {count} classes: corrupt checkpoint?",
                           path=path)
    return tuple(bytes(n).decode("utf-8", "replace") for n in names)


def _recorded_colours(path, class_colours, count):
    if class_colours is None:
        return None
    colours = np.asarray(class_colours)
    if (colours.shape != (count, 3) or colours.dtype.kind not in "iu"
            or colours.min(initial=0) < 0 or colours.max(initial=0) > 255):
        raise BadFileError(f"{path}: meta/class_colours holds {colours.dtype} "
                           f"{colours.shape} for {count} classes, not one RGB colour (0..255) "
                           "per class: corrupt checkpoint?", path=path)
    return tuple(tuple(int(v) for v in colour) for colour in colours)


def check_finite(path, name, value):
    """`value` (tensor `name` of file `path`) when it holds finite floating-point numbers.

    Raises:
        BadFileError naming the file, the tensor and how many values are not finite.
    """
    if value.dtype.kind != "f" and value.dtype.name != "bfloat16":
        raise BadFileError(f"{path}: tensor '{name}' holds {value.dtype} values, not "
                           "floating-point weights", path=path)
    # A NaN or infinity makes the (fast) sum non-finite; so may an overflow of large finite
    # values, hence the values are then counted one by one.
    bad = 0
    with np.errstate(over="ignore", invalid="ignore"):
        total = value.sum()
    if not np.isfinite(total):
        bad = value.size - int(np.count_nonzero(np.isfinite(value)))
    if bad:
        raise BadFileError(f"{path}: tensor '{name}' holds {bad} NaN or infinite values "
                           f"(of {value.size}): refused as weights", path=path)
    return value


def _shown(names, limit=3):
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


@dataclasses.dataclass(eq=False)
class WeightsFile:
    """An opened weights file (see the module's docstring); `checkpoint.open_weights` makes it.

    Attributes:
        path: the file actually read (for a folder of checkpoints, the prefix it resolved to).
        format: "checkpoint", "2017-port checkpoint", "npz" or "caffemodel".
        variant, num_classes: what the file records (`recorded`), else what its
            tensors imply; None when unknown (num_classes: no DeepLab head).
        class_names: the class names the file records, None when not recorded.
        class_colours: the (R, G, B) of each class the file records, None when not recorded.
        recorded: whether variant and class count were recorded in the file.
        strict: whether a file holding the DeepLab head may hold nothing else
            (True for checkpoints and `.npz`; caffemodels keep other layers).
        index: index() -> {name: (shape, read)}, read() giving the array; called once,
            when the tensors are first needed (a caffemodel's are matched to the
            architecture only then).
    """
    path: str
    format: str
    variant: object = None
    num_classes: object = None
    class_names: object = None
    class_colours: object = None
    recorded: bool = False
    strict: bool = True
    index: object = dataclasses.field(default=dict, repr=False)

    @functools.cached_property
    def tensors(self):
        """{name: (shape, read)} of every tensor, in the model's naming scheme."""
        return self.index()

    @property
    def shapes(self):
        """{name: shape} of every tensor, without reading a value."""
        return {name: tuple(shape) for name, (shape, _) in self.tensors.items()}

    @property
    def noun(self):
        """What the file is called in messages."""
        return {"npz": ".npz", "caffemodel": "caffemodel"}.get(self.format, "checkpoint")

    def check_head(self):
        """Raises BadFileError when a recorded class count contradicts the head's shape."""
        head = self.tensors.get(HEAD_WEIGHTS)
        if head is None:
            raise BadFileError(f"{self.path}: records {self.num_classes} classes but holds no "
                               f"'{HEAD_WEIGHTS}': corrupt checkpoint?", path=self.path)
        if int(head[0][-1]) != self.num_classes:
            raise BadFileError(f"{self.path}: records {self.num_classes} classes, but its "
                               f"'{HEAD_WEIGHTS}' has shape {tuple(head[0])}", path=self.path)

    def check(self, arch, new_head=False):
        """The names of `arch`'s parameters to read, after checking every shape.

        Args:
            arch: an `arch.Architecture`.
            new_head: the head is not read (it is not checked either).
        Raises:
            BadFileError: a parameter missing or of another shape, or (`strict`, the file
                holding the DeepLab head) a tensor the architecture does not name.
        """
        expected = arch.param_shapes()
        wanted = [n for n in expected if not (new_head and arch_lib.is_head_variable(n))]
        shapes = self.shapes
        what = f"DeepLab {arch.variant}"
        missing = [n for n in wanted if n not in shapes]
        if missing:
            raise BadFileError(f"{self.path}: {len(missing)} tensors of {what} are missing "
                               f"({_shown(missing)})", path=self.path)
        for name in wanted:
            if shapes[name] != tuple(expected[name]):
                raise BadFileError(f"{self.path}: tensor '{name}' has shape {shapes[name]}, "
                                   f"{what} expects {tuple(expected[name])}", path=self.path)
        stem_bias = arch_lib.param_name(arch.stem.name, arch_lib.BIASES)
        if self.strict and HEAD_WEIGHTS in shapes:
            unknown = [n for n in shapes if n not in expected and n != stem_bias]
            if unknown:
                raise BadFileError(f"{self.path}: {len(unknown)} tensors are not parameters of "
                                   f"{what} ({_shown(unknown)})", path=self.path)
        return wanted + ([stem_bias] if stem_bias in shapes else [])

    def read(self, name):
        """One tensor's values as a numpy array.

        Raises:
            BadFileError: a value that is not a finite floating-point number.
        """
        return check_finite(self.path, name, np.asarray(self.tensors[name][1]()))

    def read_all(self, names=None):
        """{name: array} of `names` (default: every tensor), each checked by `read`."""
        return {name: self.read(name) for name in (self.tensors if names is None else names)}

    def params_for(self, arch, new_head=False):
        """{name: array} for a model of `arch`: checked (`check`), read, stem bias folded."""
        return fold_stem_bias(self.read_all(self.check(arch, new_head)), arch.stem)

    def settle(self, variant, num_classes, new_head=False):
        """The (variant, num_classes) to build: the user's settings filled from the file.

        `variant`/`num_classes` are the user's settings (None when not given). A
        setting that contradicts the file is an error, except the class count when
        the head is not restored (`new_head`). Either may stay None when unknown.

        Raises:
            SettingError naming the setting.
        """
        if variant is not None and self.variant is not None and variant != self.variant:
            raise SettingError(f"{self.path}: {self.noun} holds model '{self.variant}', "
                               f"but {{variant}} {variant} was given", "variant", path=self.path)
        if self.num_classes is None or (new_head and num_classes is not None):
            return self.variant or variant, num_classes
        if num_classes is not None and num_classes != self.num_classes:
            raise SettingError(f"{self.path}: {self.noun} has {self.num_classes} classes, "
                               f"but {{num_classes}} {num_classes} was given", "num_classes",
                               path=self.path)
        return self.variant or variant, self.num_classes

    def require_head(self, new_head, prototxt=None):
        """Weights without the DeepLab head (an ImageNet ResNet, a COCO init model) need
        `new_head`; a SettingError naming the fix otherwise."""
        if new_head or self.num_classes is not None:
            return
        if self.format == "caffemodel" and prototxt is None:
            raise SettingError(f"{self.path}: caffemodel has no '{HEAD_LAYER}' layer, so it is "
                               "not a DeepLab model; give its deploy prototxt with {prototxt}, "
                               "or add {new_head} to read its backbone only", "prototxt",
                               "new_head", path=self.path)
        raise SettingError(f"{self.path}: holds no DeepLab head ({arch_lib.HEAD_PREFIX}_*), "
                           "e.g. an ImageNet ResNet: add {new_head} to start a new head",
                           "new_head", path=self.path)


def fold_stem_bias(params, stem):
    """Folds a stem bias (ImageNet ResNets have `conv1/biases`) into its BatchNorm mean.

    BN(x + b) = BN'(x) with mean' = mean - b, so the DeepLab stem, which has no
    bias, computes the same function.

    Args:
        params: {name: array}.
        stem: the `arch.Conv` of the stem.
    """
    bias, mean = arch_lib.param_name(stem.name, arch_lib.BIASES), stem.bn_param("mean")
    if bias not in params or mean not in params:
        return params
    params = dict(params)
    params[mean] = np.asarray(params[mean]) - np.asarray(params.pop(bias))
    return params


def opened(path, format, tensors=None, index=None, recorded=None, strict=True):
    """A checked `WeightsFile`.

    Args:
        path, format, strict: as in `WeightsFile`.
        tensors: {name: (shape, read)}, when known now (checkpoints, `.npz`).
        index: instead of `tensors`, a callable giving them later (caffemodels).
        recorded: (variant, num_classes, class_names, class_colours) the file records
            (`recorded_meta`),
            None when it records none: then they are inferred from the tensors.
        strict: see `WeightsFile`.
    Raises:
        BadFileError: recorded metadata that contradicts the tensors (the head's shape,
            the variant's names and shapes). Inferred metadata agrees with them by
            construction; the tensors' shapes are checked when they are read for a model.
    """
    if tensors is not None:
        index = functools.partial(dict, tensors)
    weights = WeightsFile(path, format, strict=strict, index=index)
    if recorded is None:
        if tensors is not None:
            weights.variant, weights.num_classes = infer_meta(weights.shapes)
        return weights
    weights.variant, weights.num_classes, weights.class_names, weights.class_colours = recorded
    weights.recorded = True
    weights.check_head()
    weights.check(arch_lib.architecture(weights.variant, weights.num_classes))
    return weights
