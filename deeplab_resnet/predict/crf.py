"""Dense CRF post-processing (Kraehenbuehl & Koltun), through the optional pydensecrf2.

The CRF is a numpy step after the network: it refines per-pixel class
probabilities using the image colours. pydensecrf2 is an optional extra
(`pip install .[crf]`) and is imported only when a CRF is run, so the rest of
the package works without it.
"""

import dataclasses

import numpy as np

from deeplab_resnet.errors import DeepLabError

INSTALL_HINT = ("dense CRF needs the optional package pydensecrf2: "
                "pip install 'deeplab-resnet[crf]' (or: pip install pydensecrf2)")

# Probabilities are clipped before the log so that a hard 0 gives a large but
# finite unary energy instead of inf, which the mean-field update cannot use.
_MIN_PROBABILITY = 1e-8


@dataclasses.dataclass(frozen=True)
class CRFParams:
    """Dense CRF settings; the defaults are DeepLab-v2 ResNet-101's published VOC ones.

    Attributes:
        iterations: mean-field iterations.
        gaussian_sxy: spatial std (pixels) of the smoothness kernel.
        gaussian_weight: weight (Potts compatibility) of the smoothness kernel.
        bilateral_sxy: spatial std (pixels) of the appearance kernel.
        bilateral_srgb: colour std (0-255 scale) of the appearance kernel.
        bilateral_weight: weight (Potts compatibility) of the appearance kernel.
    """
    iterations: int = 10
    gaussian_sxy: float = 1.0
    gaussian_weight: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_weight: float = 4.0


def available():
    """True when pydensecrf2 can be imported."""
    try:
        _densecrf()
    except DeepLabError:
        return False
    return True


def _densecrf():
    try:
        # pydensecrf2 installs the module under the original project's name.
        import pydensecrf.densecrf as densecrf
    except ImportError:
        raise DeepLabError(INSTALL_HINT) from None
    return densecrf


def refine(image, probabilities, params=CRFParams()):
    """Runs the dense CRF on one image.

    Args:
        image: HxWx3 uint8 RGB image (the original colours, not preprocessed).
        probabilities: HxWxC class probabilities at image resolution.
        params: a CRFParams.
    Returns:
        HxWxC float32 refined probabilities (the CRF's marginals).
    """
    densecrf = _densecrf()
    h, w, num_classes = probabilities.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[:2]} and probabilities {(h, w)} differ in size")
    unary = -np.log(np.clip(probabilities, _MIN_PROBABILITY, 1.0))
    # The library wants (classes, pixels) float32 and a C-contiguous, writable
    # uint8 image (its Cython signature refuses read-only buffers).
    unary = np.ascontiguousarray(unary.reshape(h * w, num_classes).T, dtype=np.float32)
    crf = densecrf.DenseCRF2D(w, h, num_classes)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_weight)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.array(image, dtype=np.uint8, order="C", copy=True),
                             compat=params.bilateral_weight)
    marginals = np.asarray(crf.inference(params.iterations), dtype=np.float32)
    return marginals.reshape(num_classes, h, w).transpose(1, 2, 0)
