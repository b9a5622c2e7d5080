"""DeepLab-v2 atrous ResNet with the ASPP head, named after the Caffe layers.

The network is described once, by `architecture()`, as a list of Caffe-named
convolutions grouped into bottleneck blocks. The `DeepLabResNet` module creates
its variables from that description and runs it; `deeplab_resnet.deploy`
writes the same description as a Caffe deploy prototxt.

Variable naming scheme (checkpoint keys `params/<name>`):

    <conv layer>/weights      HWIO kernel, e.g. `res4b22_branch2b/weights`
    <conv layer>/biases       only the head, e.g. `fc1_voc12_c3/biases`
    <bn layer>/mean           BatchNorm moving mean, e.g. `bn_conv1/mean`
    <bn layer>/variance       BatchNorm moving variance
    <bn layer>/scale          the following Caffe Scale layer's gamma
    <bn layer>/offset         the following Caffe Scale layer's beta
"""

import dataclasses

import numpy as np
from deeplab_resnet.tf_quiet import tf

from deeplab_resnet import layers

IMG_MEAN = np.array((104.00698793, 116.66876762, 122.67891434), dtype=np.float32)  # B, G, R
HEAD_PREFIX = "fc1_voc12"
ASPP_RATES = (6, 12, 18, 24)
# Parameters of each BatchNorm (+ Caffe Scale) layer, as `layers.fold_batch_norm` takes them.
BN_KEYS = ("mean", "variance", "scale", "offset")


@dataclasses.dataclass(frozen=True)
class Variant:
    """Depth and width of one backbone.

    Attributes:
        blocks: bottleneck blocks in stages res2..res5.
        stem_width: output channels of conv1.
        widths: bottleneck (2a/2b) widths of res2..res5; 2c and branch1 are 4x.
        numbered: stages whose blocks after `a` are named b1, b2, ... (as in
            the released ResNet-101/152) instead of b, c, d, ...
    """
    blocks: tuple
    stem_width: int = 64
    widths: tuple = (64, 128, 256, 512)
    numbered: tuple = (3, 4)


VARIANTS = {
    "resnet50": Variant(blocks=(3, 4, 6, 3), numbered=()),
    "resnet101": Variant(blocks=(3, 4, 23, 3)),
    "resnet152": Variant(blocks=(3, 8, 36, 3)),
    # One narrow bottleneck per stage: for tests, demos and CPU experiments.
    "tiny": Variant(blocks=(1, 1, 1, 1), stem_width=16, widths=(8, 16, 32, 64), numbered=()),
}
DEFAULT_VARIANT = "resnet101"


@dataclasses.dataclass(frozen=True)
class Conv:
    """One Caffe Convolution, with the BatchNorm/Scale/ReLU that follow it in place."""
    name: str
    bottom: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    bias: bool = False
    bn: str = None
    scale: str = None
    relu: bool = False


@dataclasses.dataclass(frozen=True)
class Block:
    """A bottleneck: `name` = relu(branch2c(branch2b(branch2a(x))) + shortcut)."""
    name: str
    bottom: str
    branch1: Conv
    branch2: tuple


@dataclasses.dataclass(frozen=True)
class Architecture:
    variant: str
    num_classes: int
    stem: Conv
    pool: tuple  # (kernel, stride, pad) of pool1, Caffe ceil mode
    blocks: tuple
    head: tuple

    @property
    def convs(self):
        """Every convolution in Caffe order."""
        out = [self.stem]
        for block in self.blocks:
            if block.branch1 is not None:
                out.append(block.branch1)
            out.extend(block.branch2)
        return out + list(self.head)


def block_names(variant, stage, count):
    """Caffe names of the blocks of stage `stage` (2..5)."""
    if stage in VARIANTS[variant].numbered:
        return [f"res{stage}a"] + [f"res{stage}b{i}" for i in range(1, count)]
    return [f"res{stage}{chr(ord('a') + i)}" for i in range(count)]


def _conv(name, bottom, cin, cout, kernel, stride=1, dilation=1, relu=False, bn_suffix=None):
    suffix = bn_suffix if bn_suffix is not None else name[len("res"):]
    return Conv(name=name, bottom=bottom, in_channels=cin, out_channels=cout, kernel=kernel,
                stride=stride, pad=dilation * (kernel // 2), dilation=dilation,
                bn=f"bn{suffix}", scale=f"scale{suffix}", relu=relu)


def architecture(variant=DEFAULT_VARIANT, num_classes=21):
    """The DeepLab-v2 network of a variant as Caffe-named layers."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant '{variant}' (choose from {', '.join(VARIANTS)})")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    spec = VARIANTS[variant]
    stem = _conv("conv1", "data", 3, spec.stem_width, 7, stride=2, relu=True, bn_suffix="_conv1")
    stem = dataclasses.replace(stem, pad=3)
    blocks = []
    bottom, channels = "pool1", spec.stem_width
    # Output stride 8: res3 downsamples, res4 and res5 dilate instead (2, 4).
    strides = {2: 1, 3: 2, 4: 1, 5: 1}
    dilations = {2: 1, 3: 1, 4: 2, 5: 4}
    for stage, count, width in zip((2, 3, 4, 5), spec.blocks, spec.widths):
        for index, name in enumerate(block_names(variant, stage, count)):
            first = index == 0
            stride = strides[stage] if first else 1
            branch1 = None
            if first:
                branch1 = _conv(f"{name}_branch1", bottom, channels, 4 * width, 1, stride=stride)
            branch2 = (
                _conv(f"{name}_branch2a", bottom, channels, width, 1, stride=stride, relu=True),
                _conv(f"{name}_branch2b", f"{name}_branch2a", width, width, 3,
                      dilation=dilations[stage], relu=True),
                _conv(f"{name}_branch2c", f"{name}_branch2b", width, 4 * width, 1),
            )
            blocks.append(Block(name=name, bottom=bottom, branch1=branch1, branch2=branch2))
            bottom, channels = name, 4 * width
    head = tuple(
        Conv(name=f"{HEAD_PREFIX}_c{i}", bottom=bottom, in_channels=channels,
             out_channels=num_classes, kernel=3, pad=rate, dilation=rate, bias=True)
        for i, rate in enumerate(ASPP_RATES))
    return Architecture(variant=variant, num_classes=num_classes, stem=stem, pool=(3, 2, 1),
                        blocks=tuple(blocks), head=head)


def infer_variant(layer_names):
    """The variant whose backbone convolutions are all among `layer_names` (the largest such), or None.

    For weights that do not record their variant (a converted ImageNet ResNet, the 2017
    port's checkpoints, an .npz): ResNet-152's names include ResNet-101's, and
    ResNet-50's the tiny variant's, hence the largest.
    """
    layer_names = set(layer_names)
    best, best_count = None, 0
    for variant in VARIANTS:
        convs = [c.name for c in architecture(variant).convs if not is_head_variable(c.name)]
        if len(convs) > best_count and layer_names.issuperset(convs):
            best, best_count = variant, len(convs)
    return best


def output_size(size, variant=DEFAULT_VARIANT):
    """Logit size for an input size (int), exactly as Caffe computes it."""
    arch = architecture(variant, 1)
    size = layers.conv_output_size(size, 7, 2, 3)
    kernel, stride, pad = arch.pool
    size = layers.pool_output_size(size, kernel, stride, pad)
    return layers.conv_output_size(size, 1, 2, 0)


def is_head_variable(name):
    return name.startswith(HEAD_PREFIX)


def preprocess(images):
    """RGB images (0-255, any numeric dtype) -> BGR float32 minus IMG_MEAN.

    The one preprocessing function of the project: the released Caffe models
    expect BGR on the 0-255 scale with the per-channel mean removed.
    """
    images = tf.cast(images, tf.float32)
    return images[..., ::-1] - IMG_MEAN


def _batch_moments(x):
    """Per-channel mean, variance and element count of an NHWC batch.

    Under a tf.distribute strategy with several replicas the statistics are
    those of the global batch (synchronised BatchNorm: sums all-reduced, two
    passes for accuracy), so N replicas normalise exactly as one device would
    with the whole batch.
    """
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        mean, variance = tf.nn.moments(x, axes=[0, 1, 2])
        return mean, variance, count
    total, count = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                      [tf.reduce_sum(x, axis=[0, 1, 2]), count])
    mean = total / count
    squares = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                 tf.reduce_sum(tf.square(x - mean), axis=[0, 1, 2]))
    return mean, squares / count, count


class DeepLabResNet(tf.Module):
    """DeepLab-v2 ResNet (atrous backbone + ASPP) with Caffe-exact arithmetic.

    Args:
        variant: one of `VARIANTS` ("resnet101" is the released network).
        num_classes: number of output channels of the ASPP head.
        train_bn: if True, BatchNorm uses batch statistics in training, updates
            its moving statistics and trains scale/offset. Default: frozen.
        bn_eps: BatchNorm epsilon (Caffe's default 1e-5).
        bn_momentum: moving-average fraction when `train_bn` (Caffe's 0.999).
            The moving statistics are Caffe's normalised averages (weighted sum
            / sum of weights, `meta["bn_factor"]`), so they are unbiased from
            the first batch on, with the unbiased (m / (m - 1)) batch variance.
        seed: seed of the initial weights (He-normal backbone, N(0, 0.01) head).
        fold_bn: compute each frozen BatchNorm (all of them, or with `train_bn`
            outside training) folded into its convolution's weights, inside
            the forward pass: the same function with fewer passes. False runs
            BatchNorm as separate operations.

    Example:
        >>> model = DeepLabResNet("tiny", num_classes=3)
        >>> logits = model(preprocess(tf.zeros([1, 65, 65, 3])))
        >>> logits.shape
        TensorShape([1, 9, 9, 3])
    """

    def __init__(self, variant=DEFAULT_VARIANT, num_classes=21, train_bn=False,
                 bn_eps=layers.CAFFE_BN_EPS, bn_momentum=0.999, seed=0, fold_bn=True, name=None):
        super().__init__(name=name or "deeplab_resnet")
        self.arch = architecture(variant, num_classes)
        self.variant = variant
        self.num_classes = num_classes
        self.train_bn = train_bn
        self.bn_eps = bn_eps
        self.bn_momentum = bn_momentum
        self.fold_bn = bool(fold_bn)
        rng = np.random.default_rng(seed)
        params = {}
        for conv in self.arch.convs:
            shape = (conv.kernel, conv.kernel, conv.in_channels, conv.out_channels)
            head = is_head_variable(conv.name)
            std = 0.01 if head else np.sqrt(2.0 / (conv.kernel * conv.kernel * conv.in_channels))
            params[f"{conv.name}/weights"] = tf.Variable(
                rng.normal(0.0, std, shape).astype(np.float32), name=f"{conv.name}/weights")
            if conv.bias:
                params[f"{conv.name}/biases"] = tf.Variable(
                    tf.zeros([conv.out_channels]), name=f"{conv.name}/biases")
            if conv.bn:
                n = conv.out_channels
                for key, init, trainable in (("mean", 0.0, False), ("variance", 1.0, False),
                                             ("scale", 1.0, train_bn), ("offset", 0.0, train_bn)):
                    params[f"{conv.bn}/{key}"] = tf.Variable(
                        tf.fill([n], init), trainable=trainable, name=f"{conv.bn}/{key}")
        # A dict keyed by the Caffe names: checkpoint keys read `params/<name>`.
        self.params = params
        # bn_factor: Caffe's moving-average normaliser; 0 = no batch seen yet.
        self.meta = {"model": tf.Variable(variant, trainable=False, name="model"),
                     "num_classes": tf.Variable(num_classes, trainable=False, name="num_classes"),
                     "bn_factor": tf.Variable(0.0, trainable=False, name="bn_factor")}

    def mark_statistics_trained(self):
        """Moving statistics came from a trained model: weight them as a long history.

        Caffe keeps the normaliser of a long-trained net near 1 / (1 - momentum);
        continuing from there makes new batches update the statistics as Caffe would.
        """
        self.meta["bn_factor"].assign(1.0 / (1.0 - self.bn_momentum))

    # -- variable groups (LR multipliers, weight decay) -------------------------------------

    def backbone_weights(self):
        return [v for k, v in self.params.items()
                if k.endswith("/weights") and not is_head_variable(k)]

    def head_weights(self):
        return [v for k, v in self.params.items() if k.endswith("/weights") and is_head_variable(k)]

    def head_biases(self):
        return [v for k, v in self.params.items() if k.endswith("/biases") and is_head_variable(k)]

    def bn_trainables(self):
        if not self.train_bn:
            return []
        return [v for k, v in self.params.items() if k.endswith(("/scale", "/offset"))]

    def weight_decay_variables(self):
        """Convolution weights only: no biases, no BatchNorm."""
        return [v for k, v in self.params.items() if k.endswith("/weights")]

    # -- forward ------------------------------------------------------------------------------

    def _conv_bn(self, x, conv, training):
        p = self.params
        dtype = x.dtype
        weights = p[f"{conv.name}/weights"]
        biases = p[f"{conv.name}/biases"] if conv.bias else None
        fold = conv.bn and self.fold_bn and not (training and self.train_bn)
        if fold:
            # Frozen BatchNorm is a per-channel affine map: one convolution with
            # W * a and a bias instead of two passes over the activations, forward
            # and backward. Folded in float32 inside the step, so gradients reach W.
            weights, biases = layers.fold_batch_norm(
                weights, biases, *(p[f"{conv.bn}/{k}"] for k in BN_KEYS), eps=self.bn_eps)
        y = layers.conv2d(x, tf.cast(weights, dtype),
                          tf.cast(biases, dtype) if biases is not None else None,
                          stride=conv.stride, pad=conv.pad, dilation=conv.dilation)
        if conv.bn and not fold:
            y = self._batch_norm(y, conv.bn, training)
        if conv.relu:
            y = tf.nn.relu(y)
        return y

    def _batch_norm(self, x, bn, training):
        p = self.params
        mean, var = p[f"{bn}/mean"], p[f"{bn}/variance"]
        if training and self.train_bn:
            batch_mean, batch_var, count = _batch_moments(tf.cast(x, tf.float32))
            unbiased = batch_var * count / tf.maximum(count - 1.0, 1.0)
            history = self.bn_momentum * self.meta["bn_factor"]
            total = history + 1.0
            mean.assign((history * mean + batch_mean) / total)
            var.assign((history * var + unbiased) / total)
            mean, var = batch_mean, batch_var
        return layers.batch_norm(x, mean, var, p[f"{bn}/scale"], p[f"{bn}/offset"], self.bn_eps)

    def features(self, images, training=False):
        """Backbone output (`res5c`) for preprocessed images."""
        x = self._conv_bn(images, self.arch.stem, training)
        kernel, stride, pad = self.arch.pool
        x = layers.max_pool(x, kernel, stride, pad)
        for block in self.arch.blocks:
            shortcut = x if block.branch1 is None else self._conv_bn(x, block.branch1, training)
            y = x
            for conv in block.branch2:
                y = self._conv_bn(y, conv, training)
            x = tf.nn.relu(y + shortcut)
        return x

    def head(self, features):
        """ASPP: the sum of four dilated 3x3 convolutions."""
        return tf.add_n([self._conv_bn(features, conv, False) for conv in self.arch.head])

    def __call__(self, images, training=False):
        """Logits at output stride 8 (Caffe sizes) for preprocessed NHWC images."""
        logits = self.head(self.features(images, training))
        if training and self.train_bn:
            # After every layer has read the old normaliser.
            factor = self.meta["bn_factor"]
            factor.assign(self.bn_momentum * factor + 1.0)
        return logits
