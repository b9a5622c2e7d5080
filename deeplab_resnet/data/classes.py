"""Classes files: a dataset's own class names and colours, one class per line.

    # R   G   B   name        (colour first, so that a name may hold spaces)
      0   0   0   background
    255   0   0   road sign
      0 128 255   sky

Line i (blank lines and `#` comments skipped) is class index i; its colour is what
colour-coded labels draw it in and what masks and overlays show it in. Pure numpy:
no TensorFlow here.
"""

import dataclasses
import os

import numpy as np

from deeplab_resnet import defaults
from deeplab_resnet.data.datasets import VOC_PALETTE
from deeplab_resnet.errors import BadFileError, SettingError

# Class indices are label values 0..254: 255 is the ignore label.
MAX_CLASSES = defaults.IGNORE_LABEL


@dataclasses.dataclass(frozen=True)
class Classes:
    """The classes of a dataset, in index order.

    Attributes:
        names: one name per class (a tuple of str).
        colours: one (R, G, B) per class (a tuple of int triples, 0..255, distinct).
        path: the classes file they were read from, None when made in memory.

    Example:
        >>> classes = read_classes("my_classes.txt")
        >>> classes.names, classes.colours[1]
        (('background', 'road sign', 'sky'), (255, 0, 0))
    """
    names: tuple
    colours: tuple
    path: str | None = None

    def __len__(self):
        return len(self.names)

    @property
    def palette(self):
        """256x3 uint8, read-only: each class's colour at its index, VOC's colours elsewhere
        (the ignore label 255 keeps VOC's (224, 224, 192))."""
        return palette_of(self.colours)

    def lines(self):
        """The classes as the lines of a classes file (`R G B name`)."""
        return [f"{r} {g} {b} {name}" for (r, g, b), name in zip(self.colours, self.names)]


def palette_of(colours):
    """256x3 uint8, read-only: `colours` ((R, G, B) per class) at indices 0.., VOC's elsewhere."""
    palette = VOC_PALETTE.copy()
    colours = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
    palette[:len(colours)] = colours
    palette.setflags(write=False)
    return palette


def _colour(fields, path, number):
    """The (R, G, B) of a line's first three fields; a BadFileError naming the line if bad."""
    values = []
    for channel, text in zip("RGB", fields):
        try:
            value = int(text)
        except ValueError:
            raise BadFileError(f"{path}:{number}: {channel} '{text}' is not a number: expected "
                               "'R G B name', R, G and B 0..255", path=path) from None
        if not 0 <= value <= 255:
            raise BadFileError(f"{path}:{number}: {channel} {value} is outside 0..255",
                               path=path)
        values.append(value)
    return tuple(values)


def parse_classes(text, path):
    """The `Classes` of a classes file's text (`path` names it in messages).

    Raises:
        BadFileError naming the line: fewer than four fields, a bad number, a colour
        or name used twice; naming the file: fewer than 2 classes, more than 255.
    """
    names, colours, seen = [], [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        fields = content.split(None, 3)
        if len(fields) < 4:
            raise BadFileError(f"{path}:{number}: expected 'R G B name', got '{content}'",
                               path=path)
        colour, name = _colour(fields[:3], path, number), fields[3].strip()
        if colour in seen:
            index, first = seen[colour]
            raise BadFileError(f"{path}:{number}: colour {' '.join(map(str, colour))} is "
                               f"already class {index} '{names[index]}' (line {first}): each "
                               "class needs its own colour", path=path)
        if name in names:
            raise BadFileError(f"{path}:{number}: class name '{name}' is already class "
                               f"{names.index(name)}", path=path)
        seen[colour] = (len(names), number)
        names.append(name)
        colours.append(colour)
    if len(names) < 2:
        raise BadFileError(f"{path}: {len(names)} class{'es' if len(names) != 1 else ''} in "
                           "it: a classes file needs at least 2 lines 'R G B name' (e.g. "
                           "background and one object class)", path=path)
    if len(names) > MAX_CLASSES:
        raise BadFileError(f"{path}: {len(names)} classes: at most {MAX_CLASSES} (label value "
                           f"{defaults.IGNORE_LABEL} is the ignore label)", path=path)
    return Classes(tuple(names), tuple(colours), str(path))


def read_classes(path):
    """Reads a classes file (see the module's docstring).

    Raises:
        BadFileError (`.path` the file) for a missing or unreadable file, or a line
        that is wrong (its number and what is wrong: a bad number, a duplicate
        colour), or fewer than 2 classes.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise BadFileError(f"{path}: no such file", path=path) from None
    except IsADirectoryError:
        raise BadFileError(f"{path}: is a folder, not a classes file", path=path) from None
    except OSError as exc:
        raise BadFileError(f"{path}: cannot read ({exc.strerror or exc})", path=path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BadFileError(f"{path}:{line}: not UTF-8 text", path=path) from None
    return parse_classes(text, path)


def as_classes(value, field="classes"):
    """A `Classes` from what the API's `classes=` takes: a classes file's path, a `Classes`,
    or the lines of one (`R G B name` strings); None stays None.

    Raises:
        BadFileError for a bad file; SettingError naming `field` for another type.
    """
    if value is None or isinstance(value, Classes):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_classes(os.fspath(value))
    if isinstance(value, (list, tuple)) and all(isinstance(line, str) for line in value):
        return parse_classes("\n".join(value), f"{field} (lines given)")
    raise SettingError(f"{{{field}}}: expected a classes file's path or a "
                       f"deeplab_resnet.data.classes.Classes, got {type(value).__name__}", field)


def settle(classes, num_classes, class_names=None):
    """The class count of a model given `classes` (None: `num_classes` unchanged).

    Raises:
        SettingError naming `classes` and the contradicting setting: a `num_classes`
        other than the file's count, or `class_names` other than its names.
    """
    if classes is None:
        return num_classes
    where = classes.path or "the classes given"
    if num_classes is not None and num_classes != len(classes):
        raise SettingError(f"{{classes}} {where} has {len(classes)} classes but {{num_classes}} "
                           f"is {num_classes}: give one of them, or make them agree",
                           "classes", "num_classes")
    if class_names is not None and tuple(class_names) != classes.names:
        raise SettingError(f"{{classes}} {where} names the classes "
                           f"{','.join(classes.names)} but {{class_names}} gives "
                           f"{','.join(class_names)}: give one of them", "classes",
                           "class_names")
    return len(classes)


def fill_config(config):
    """Reads a frozen config's `classes` (see `as_classes`) and fills in what follows from
    it: `classes` becomes the `Classes`, `num_classes` and `class_names` its count and names
    (given too, they must agree: `settle`). For the configs' `__post_init__`."""
    classes = as_classes(config.classes)
    if classes is not None:
        num_classes = settle(classes, config.num_classes, config.class_names)
        object.__setattr__(config, "classes", classes)
        object.__setattr__(config, "num_classes", num_classes)
        object.__setattr__(config, "class_names", classes.names)
