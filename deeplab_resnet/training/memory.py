"""Whether one update fits: the memory it needs, estimated from the model, the crop and the
batch, against what the machine has, checked before the first update.

A batch far too large for the machine's memory does not always end with an error: on a CPU
machine the process can be killed or crash (a segfault) while TensorFlow allocates. So a
run whose estimate clearly exceeds the memory available (`/proc/meminfo`'s MemAvailable)
stops before its first update with a `SettingError` naming `batch_size` and `input_size`.
On GPUs TensorFlow reports a failed allocation itself (`ResourceExhaustedError`); the
commands name the same flags then.

The estimate (`update_bytes`) is linear in the pixels of a mini-batch: per pixel, a fixed
part (the images, labels and their copies) and a part per activation value the network
computes for it (from the architecture: channels over the squared stride of each layer);
plus a fixed part and the gradients and optimizer slots in proportion to the parameters.
Calibrated on a CPU with float32 and frozen BatchNorm (`benchmarks/bench_memory.py`, tiny
and ResNet-101 at 161 and 321 pixels, batches 1 and 2: within about 30%, mostly above); it
is a rough guide, so a run is refused only where it needs clearly more (`MARGIN`) than
there is.

Imports no TensorFlow.
"""

import logging
import math

from deeplab_resnet.errors import NamingSettings, SettingError, counted, shown
from deeplab_resnet.model import arch as arch_lib

log = logging.getLogger(__name__)

BASE_BYTES = 68 * 2**20  # the traced step, the runtime's buffers
PER_PARAMETER_BYTES = 4 * 1.9  # float32 gradients and optimizer slots (beyond the weights)
PER_PIXEL_BYTES = 440.0  # images, labels and their copies, per pixel of the crop
PER_ACTIVATION_BYTES = 6.6  # per activation value per pixel kept for the backward pass
MARGIN = 1.25  # refused only where the estimate exceeds the memory available by this factor


def activations_per_pixel(variant, num_classes):
    """Activation values the network computes per input pixel (every layer's channels over
    its squared stride)."""
    arch = arch_lib.architecture(variant, num_classes)
    total = [0.0]

    def add(stride, channels):
        total[0] += channels / stride**2
        return stride, channels

    arch_lib.run(arch, (1, 3),
                 lambda x, conv: add(x[0] * conv.stride, conv.out_channels),
                 lambda x, pool: add(x[0] * pool.stride, x[1]),
                 lambda block, shortcut, branch: add(*branch),
                 lambda outputs: add(outputs[0][0], num_classes))
    return total[0]


def parameters(variant, num_classes):
    """The number of parameters of the network."""
    shapes = arch_lib.architecture(variant, num_classes).param_shapes().values()
    return sum(math.prod(shape) for shape in shapes)


def update_bytes(variant, input_size, batch_size, num_classes=21, micro_batches=1):
    """Estimated memory of one update beyond the weights, per replica, in bytes.

    Args:
        variant: the network variant.
        input_size: the crop (height, width).
        batch_size: images per mini-batch on the replica.
        num_classes: the head's classes.
        micro_batches: mini-batches per update (their gradients are summed in a buffer).
    """
    pixels = batch_size * input_size[0] * input_size[1]
    per_pixel = PER_PIXEL_BYTES + PER_ACTIVATION_BYTES * activations_per_pixel(variant,
                                                                               num_classes)
    slots = PER_PARAMETER_BYTES + (4 if micro_batches > 1 else 0)
    return BASE_BYTES + slots * parameters(variant, num_classes) + pixels * per_pixel


def available_bytes(meminfo="/proc/meminfo"):
    """The memory the machine can still give (MemAvailable), None where it is not known."""
    try:
        with open(meminfo, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gib(size):
    return f"{size / 2**30:.1f} GiB"


def check(config, variant, num_classes, on_gpu, available=None):
    """Raises a `SettingError` naming `batch_size` and `input_size` when one update of
    `config` clearly needs more memory than the machine has (CPU only: `on_gpu` skips it).

    Args:
        config: the `TrainConfig`.
        variant, num_classes: the model's.
        on_gpu: whether the network runs on GPUs.
        available: the bytes available (default: `available_bytes()`).
    """
    if on_gpu:
        return
    available = available_bytes() if available is None else available
    if available is None:
        return
    need = update_bytes(variant, config.input_size, config.batch_size, num_classes,
                        config.grad_update_every)
    if need <= MARGIN * available:
        return
    height, width = config.input_size
    raise SettingError(
        f"one update of {variant} on {{batch_size}} {config.batch_size} x {{input_size}} "
        f"{height},{width} needs about {gib(need)} of memory, and this machine has "
        f"{gib(available)} available: give a smaller {{batch_size}} or {{input_size}} "
        f"({{grad_update_every}} N keeps the batch of an update with N times fewer images "
        "at a time)", "batch_size", "input_size", "grad_update_every")


def warn_if_larger_than_the_list(config, list_size):
    """A warning (naming `batch_size`) when one mini-batch holds more images than the list:
    each mini-batch then repeats images. (Several replicas or mini-batches per update that
    together read more than the list, each its own share, are how small data is spread.)"""
    if config.batch_size <= list_size:
        return
    template = (f"warning: {{batch_size}} {config.batch_size} is more than the "
                f"{counted(list_size, 'image')} of {shown(config.data_list)}: each mini-batch "
                "repeats images")
    log.warning(NamingSettings(template, "batch_size"))
