"""What a prediction is told: `PredictConfig`, the settings of `Segmenter.load`.

Imports no TensorFlow.
"""

import dataclasses

from deeplab_resnet import defaults, settings as rules
from deeplab_resnet.data import classes as classes_lib
from deeplab_resnet.data.datasets import DATASETS
from deeplab_resnet.errors import SettingError
from deeplab_resnet.model.arch import VARIANTS
from deeplab_resnet.predict.crf import CRFParams


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """The network to build from the weights and the test protocol to run it with.

    A config checks its fields when it is made (a SettingError naming the first
    bad field; `deeplab_resnet.settings`); the commands show the flag instead
    (`variant` is --model, `crf=True` is --crf). Lists are kept as tuples.

    Attributes:
        variant: the network variant (`Segmenter.load`'s `model`); None: the one
            the weights record or their parameter names show.
        num_classes: None: the weights' head's; a contradicting value is refused
            when the weights are read.
        prototxt: deploy prototxt for a `.caffemodel` (None: the project's own
            for the variant).
        precision: "fp32" (Caffe's numbers), "bf16" or "fp16"; where the
            hardware has no native arithmetic for it, fp32 runs (logged as a
            warning; see `Segmenter.precision`).
        scales: input scales; more than one fuses the logits by element-wise max (MSC).
        flip: also run the mirrored image and average the two probability maps.
        deeplab_protocol: DeepLab's pad / zoom x8 / crop test protocol.
        pad_size: padded side for `deeplab_protocol` (513).
        crf: refine with a dense CRF: True (DeepLab-v2's VOC settings) or a
            `deeplab_resnet.predict.crf.CRFParams`; None or False: no CRF. Needs
            the optional pydensecrf2.
        class_names: one name per class (None: those the weights record, else
            the dataset's).
        dataset: the dataset the model was trained for ("voc", "cocostuff",
            "cityscapes", "ade20k"; `deeplab_resnet.data.datasets`): its class
            names and colours (None: recognised by the class count; a count no
            dataset has gives class_<i> and VOC's colours).
        classes: a classes file (path, or a `deeplab_resnet.data.classes.Classes`):
            the classes' names and colours, which win over those the weights
            record; `num_classes` and `class_names` follow from it (given too,
            they must agree). Read when the config is made: the field then holds
            the `Classes`.

    Example:
        >>> PredictConfig(scales=[1.0, 0.75, 0.5], flip=True).scales
        (1.0, 0.75, 0.5)
    """
    variant: str | None = None
    num_classes: int | None = None
    prototxt: str | None = None
    precision: str = rules.DEFAULT_PRECISION
    scales: tuple = (1.0,)
    flip: bool = False
    deeplab_protocol: bool = False
    pad_size: int = defaults.PAD_SIZE
    crf: object = None
    class_names: tuple | None = None
    dataset: str | None = None
    classes: object = None

    def __post_init__(self):
        for field in ("scales", "class_names"):
            value = getattr(self, field)
            if isinstance(value, list):
                object.__setattr__(self, field, tuple(value))
        rules.check_fields(self, _RULES)
        classes_lib.fill_config(self)

    @property
    def crf_params(self):
        """The `CRFParams` of `crf`, or None for no CRF."""
        if self.crf is None or self.crf is False:
            return None
        return CRFParams() if self.crf is True else self.crf

    @classmethod
    def of(cls, config=None, **settings):
        """`config` (default: the defaults) with `settings` ({field: value}) changed.

        Raises:
            SettingError: a key that is not a field, or a bad value.
        """
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise SettingError(f"not a prediction setting: {', '.join(unknown)} (the settings "
                               f"are the fields of PredictConfig)")
        if config is not None and not isinstance(config, cls):
            raise SettingError(f"{{config}}: expected a PredictConfig, got "
                               f"{type(config).__name__}", "config")
        return dataclasses.replace(config or cls(), **settings)


_RULES = {
    "variant": rules.one_of(VARIANTS).or_none(), "num_classes": rules.POSITIVE_INT.or_none(),
    "prototxt": rules.PATH.or_none(), "precision": rules.one_of(rules.PRECISIONS),
    "scales": rules.SCALES, "flip": rules.BOOLEAN, "deeplab_protocol": rules.BOOLEAN,
    "pad_size": rules.POSITIVE_INT,
    "crf": rules.Rule("True, False or a deeplab_resnet.predict.crf.CRFParams",
                      lambda v: isinstance(v, (bool, CRFParams)), optional=True),
    "class_names": rules.CLASS_NAMES.or_none(), "dataset": rules.one_of(DATASETS).or_none(),
}
