"""The devices that run the network, and the process-wide device settings a caller may choose.

Nothing here changes TensorFlow's state unless asked: the commands call `use_tf32(False)`
(Caffe-exact float32) unless given `--tf32`, `use_memory_growth()` with `--memory-growth`, and
`log_devices()` first thing, so a run never trains on the CPU silently because a CUDA library
is missing. A notebook gets the same behaviour by calling them itself:

    >>> from deeplab_resnet.runtime import devices
    >>> devices.use_tf32(False)   # true float32 on Ampere and later GPUs, as Caffe computes
    >>> devices.log_devices()     # 'devices: CPU (no GPU visible)' or the GPUs and their TF32 state

TF32: on GPUs of compute capability >= 8.0 TensorFlow runs float32 convolutions and matrix
products with 10-bit mantissas by default (about 1e-3 relative error), unlike Caffe and unlike
every CPU; `use_tf32(False)` turns that off for the whole process.

Memory growth: by default TensorFlow reserves (nearly) all the memory of every visible GPU, so a
second process on the same GPU (evaluation beside training, several workers) fails.
`use_memory_growth()`, or TensorFlow's own environment variable `TF_FORCE_GPU_ALLOW_GROWTH=true`,
makes it take memory as needed. Either must happen before TensorFlow first uses the GPU.
"""

import dataclasses
import logging

import tensorflow as tf

from deeplab_resnet.errors import SettingError

logger = logging.getLogger(__name__)

MEMORY_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"
# TF32 exists from Ampere (compute capability 8.0) on.
TF32_CAPABILITY = (8, 0)


@dataclasses.dataclass(frozen=True)
class Gpu:
    """One visible GPU as TensorFlow describes it.

    Attributes:
        name: the device's name (e.g. "NVIDIA A100-SXM4-40GB"), or "" when unknown.
        compute_capability: (major, minor), or None when TensorFlow does not say.
    """
    name: str = ""
    compute_capability: tuple = None

    def describe(self):
        capability = ("" if self.compute_capability is None
                      else " (compute capability {}.{})".format(*self.compute_capability))
        return f"{self.name or 'GPU'}{capability}"


def visible_gpus():
    """The GPUs this process sees, in TensorFlow's order (GPU:0 first); initialises nothing."""
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        capability = details.get("compute_capability")
        gpus.append(Gpu(details.get("device_name", ""),
                        tuple(capability) if capability else None))
    return tuple(gpus)


def use_tf32(enabled):
    """Lets float32 convolutions and matrix products run in TF32 on GPUs that have it (or not).

    Process-wide; `False` gives Caffe-exact float32 on every GPU (TensorFlow's default is True).
    It changes nothing on a CPU.
    """
    tf.config.experimental.enable_tensor_float_32_execution(bool(enabled))


def tf32_enabled():
    """Whether float32 may run as TF32 on GPUs of compute capability >= 8.0."""
    return tf.config.experimental.tensor_float_32_execution_enabled()


def use_memory_growth():
    """Makes TensorFlow take GPU memory as needed instead of all of it (every visible GPU).

    Raises:
        SettingError (field `memory_growth`) when TensorFlow has already started using the GPUs.
    """
    for device in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(device, True)
        except RuntimeError:
            raise SettingError("{memory_growth} must be set before TensorFlow uses the GPU "
                               f"(or set {MEMORY_GROWTH_ENV}=true in the environment)",
                               "memory_growth") from None


def describe(gpus=None, tf32=None, built_with_cuda=None):
    """One line naming the devices that run the network, e.g. for a command's first lines.

    Args:
        gpus: the `Gpu`s (default: `visible_gpus()`); tests pass their own.
        tf32: whether TF32 is allowed (default: `tf32_enabled()`).
        built_with_cuda: whether this TensorFlow can use NVIDIA GPUs
            (default: `tf.test.is_built_with_cuda()`).
    Returns:
        e.g. "devices: GPU:0 NVIDIA A100 (compute capability 8.0); TF32 off (true float32)"
        or "devices: CPU (no GPU visible)".
    """
    gpus = visible_gpus() if gpus is None else tuple(gpus)
    if not gpus:
        cuda = tf.test.is_built_with_cuda() if built_with_cuda is None else built_with_cuda
        hint = ("; this TensorFlow supports CUDA: check the NVIDIA driver, the CUDA libraries "
                "and CUDA_VISIBLE_DEVICES" if cuda else "")
        return f"devices: CPU (no GPU visible{hint})"
    tf32 = tf32_enabled() if tf32 is None else tf32
    names = ", ".join(f"GPU:{i} {gpu.describe()}" for i, gpu in enumerate(gpus))
    if any(gpu.compute_capability and gpu.compute_capability >= TF32_CAPABILITY for gpu in gpus):
        mode = "on (float32 convolutions at ~1e-3 relative error)" if tf32 else "off (true float32)"
        return f"devices: {names}; TF32 {mode}"
    return f"devices: {names}"


def log_devices():
    """Logs `describe()` at INFO level (the commands show it on stdout)."""
    logger.info(describe())


def runs_on_gpu(device_name):
    """Whether an op placed at `device_name` runs on a GPU.

    Args:
        device_name: a tensor's or op's `.device` ("" when not pinned: TensorFlow then puts
            convolutions on GPU:0 if there is a GPU).
    """
    if device_name:
        return tf.DeviceSpec.from_string(device_name).device_type == "GPU"
    return bool(tf.config.list_logical_devices("GPU"))


def check_jit_determinism(jit, deterministic):
    """Refuses XLA compilation together with deterministic kernels.

    TensorFlow's XLA bridge has no deterministic max-pool gradient (select-and-scatter), nor
    some gather gradients: with op determinism on it refuses to compile the training step, on
    a CPU as on a GPU (measured on the CPU with TensorFlow 2.21: "UNIMPLEMENTED: GPU MaxPool
    gradient ops do not yet have a deterministic XLA implementation").

    Args:
        jit, deterministic: the `TrainConfig` fields.
    Raises:
        SettingError naming both fields.
    """
    if jit and deterministic:
        raise SettingError("{jit} with {deterministic} is refused: XLA has no deterministic "
                           "max-pool gradient (select-and-scatter), on CPU or GPU; drop one of "
                           "the two", "jit", "deterministic")
