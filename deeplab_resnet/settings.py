"""The rules that setting values follow, each written once.

The configs (`training.TrainConfig`, `predict.PredictConfig`) check their fields
with these rules when they are made (`check_fields` in `__post_init__`), so a
bad value is refused with its field's name before any work starts; the
commands' flag types test the same rules while parsing (`Rule.accept`,
`Rule.wanted`), and add only the flags' names. Also here: the names a choice
setting may take where no lower module owns them. Imports only `errors`.
"""

import math
import numbers
import os

from deeplab_resnet.errors import SettingError

PRECISIONS = ("fp32", "bf16", "fp16")  # the number formats a network may compute in
DEFAULT_PRECISION = "fp32"
STRATEGIES = ("default", "mirrored", "multi-worker")  # tf.distribute strategies of training
SCALE_MODES = ("uniform", "caffe")  # random-scale augmentation: a uniform draw or Caffe's
MIN_INPUT_SIZE = 32  # a smaller crop leaves the network's last layers no pixels


class Rule:
    """One rule for a setting's value.

    Args:
        wanted: what a value must be, as it reads after "must be" ("a positive integer").
        accept: value -> bool.
        optional: None is a value too (the rule's `or_none` makes such a rule).
    """

    def __init__(self, wanted, accept, optional=False):
        self.wanted = wanted
        self._accept = accept
        self.optional = optional

    def accept(self, value):
        """Whether `value` follows the rule (never raises)."""
        if value is None:
            return self.optional
        try:
            return bool(self._accept(value))
        except (TypeError, ValueError):
            return False

    def or_none(self):
        """The same rule, with None allowed (for "not given: the checkpoint's", say)."""
        return Rule(self.wanted, self._accept, optional=True)

    def check(self, value, field):
        """Raises a SettingError naming `field` unless `value` follows the rule."""
        if not self.accept(value):
            raise SettingError(f"{{{field}}} must be {self.wanted}, got {value!r}", field)


def _integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _number(value):
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def one_of(choices):
    """The rule of a choice setting: one of `choices`."""
    choices = tuple(choices)
    return Rule(f"one of {', '.join(sorted(choices))}", lambda value: value in choices)


def _sequence(value):
    return isinstance(value, (tuple, list))


POSITIVE_INT = Rule("a positive integer", lambda v: _integer(v) and v >= 1)
NON_NEGATIVE_INT = Rule("0 or more", lambda v: _integer(v) and v >= 0)
INTEGER = Rule("an integer", _integer)
LABEL_VALUE = Rule("an integer in [0, 255]", lambda v: _integer(v) and 0 <= v <= 255)
POSITIVE_NUMBER = Rule("a positive number", lambda v: _number(v) and v > 0)
NON_NEGATIVE_NUMBER = Rule("0 or a positive number", lambda v: _number(v) and v >= 0)
FRACTION = Rule("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1)
OHEM_FRACTION = Rule("a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1)
BOOLEAN = Rule("True or False", lambda v: isinstance(v, bool))
PATH = Rule("a path", lambda v: isinstance(v, (str, os.PathLike)) and os.fspath(v) != "")
SCALES = Rule("positive numbers (one or more)",
              lambda v: _sequence(v) and len(v) > 0 and all(POSITIVE_NUMBER.accept(s) for s in v))
INPUT_SIZE = Rule(f"(height, width), each an integer of at least {MIN_INPUT_SIZE}",
                  lambda v: _sequence(v) and len(v) == 2
                  and all(_integer(side) and side >= MIN_INPUT_SIZE for side in v))
CLASS_NAMES = Rule("one non-empty name per class (a tuple of strings)",
                   lambda v: _sequence(v) and len(v) > 0
                   and all(isinstance(name, str) and name.strip() for name in v))


def check_fields(config, rules):
    """Checks each field of `config` named in `rules` ({field: Rule}), in order."""
    for field, rule in rules.items():
        rule.check(getattr(config, field), field)
