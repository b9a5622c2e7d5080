"""The number format inference computes in, and whether this machine runs it fast.

bfloat16 and float16 halve the memory traffic and, on hardware with native
instructions, double the arithmetic rate. Without such instructions TensorFlow
emulates them, many times slower than float32, so a reduced precision is used
only where the hardware has it; elsewhere inference runs float32 and says so
(a warning on the `deeplab_resnet.runtime.precision` logger).

    bf16: a GPU of compute capability >= 8.0 (Ampere and later), or a CPU with
          AVX512-BF16 or AMX-BF16 (x86) or the BF16 extension (Arm).
    fp16: a GPU of compute capability >= 7.0 (Volta and later: tensor cores; 6.x
          cards run it at a fraction of float32's rate), or a CPU with
          AVX512-FP16 or AMX-FP16 (x86).

The device that runs the network decides: when there is a GPU, the GPUs alone
(every visible one, as each may run a replica), never the host CPU's flags;
the CPU's flags only when no GPU is visible. Inference (`resolve`) and
training's `precision` (`training.TrainConfig`) follow the same rule.
"""

import dataclasses
import logging

import tensorflow as tf

from deeplab_resnet import settings
from deeplab_resnet.runtime import devices

_log = logging.getLogger(__name__)

# The TensorFlow dtype of each of `settings.PRECISIONS`.
PRECISIONS = dict(zip(settings.PRECISIONS, (tf.float32, tf.bfloat16, tf.float16)))
NAMES = {dtype: name for name, dtype in PRECISIONS.items()}

# CPU flags (as /proc/cpuinfo spells them) and the least GPU compute capability
# that run each reduced precision natively.
_CPU_FLAGS = {"bf16": {"avx512_bf16", "amx_bf16", "bf16"}, "fp16": {"avx512_fp16", "amx_fp16"}}
_GPU_CAPABILITY = {"bf16": (8, 0), "fp16": (7, 0)}


@dataclasses.dataclass(frozen=True)
class Hardware:
    """What decides whether a precision is fast here.

    Attributes:
        cpu_flags: the CPU's feature flags (x86 `flags`, Arm `Features`).
        gpu_capabilities: (major, minor) compute capability of each visible GPU.
    """
    cpu_flags: frozenset = frozenset()
    gpu_capabilities: tuple = ()

    def supports(self, precision):
        """Whether `precision` ("fp32", "bf16", "fp16") runs natively here."""
        if precision == "fp32":
            return True
        if self.gpu_capabilities:  # the GPUs run the network: the host CPU does not matter
            needed = _GPU_CAPABILITY[precision]
            return all(tuple(cc) >= needed for cc in self.gpu_capabilities)
        return bool(self.cpu_flags & _CPU_FLAGS[precision])

    def describe(self):
        if self.gpu_capabilities:
            return "GPU of compute capability " + ", ".join(f"{a}.{b}" for a, b in
                                                            self.gpu_capabilities)
        return "CPU"


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU feature flags, or an empty set where the file is absent (not Linux)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def detect():
    """The `Hardware` of this process: CPU flags and visible GPUs."""
    # A GPU whose capability TensorFlow does not report counts as (0, 0): no reduced precision.
    return Hardware(cpu_flags(), tuple(gpu.compute_capability or (0, 0)
                                       for gpu in devices.visible_gpus()))


_warned = set()


def resolve(precision, hardware=None):
    """The dtype to compute in for a requested precision.

    A reduced precision this hardware cannot run natively falls back to
    float32, with one warning (per precision and process) logged on
    `deeplab_resnet.runtime.precision`.

    Args:
        precision: "fp32", "bf16" or "fp16".
        hardware: a `Hardware` (default: `detect()`); tests pass their own.
    Returns:
        tf.float32, tf.bfloat16 or tf.float16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")
    if precision == "fp32":
        return tf.float32
    hardware = hardware if hardware is not None else detect()
    if hardware.supports(precision):
        return PRECISIONS[precision]
    if precision not in _warned:
        _warned.add(precision)
        _log.warning("%s requested: this %s has no native %s arithmetic (emulated it would be "
                     "many times slower); running fp32", precision, hardware.describe(), precision)
    return tf.float32
