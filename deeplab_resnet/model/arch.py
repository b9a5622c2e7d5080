"""The DeepLab-v2 network described once: layers, parameter names and shapes, one traversal.

`architecture()` lists the Caffe-named convolutions of a variant grouped into
bottleneck blocks. Everything that walks the network goes through `run`, so
the TF model (`network.DeepLabResNet`), its BN-folded form (`fused`), the
deploy prototxt (`weights.caffe.deploy_prototxt`) and the output-size
arithmetic (`network.output_size`) cannot disagree about its order or wiring.

Parameter naming scheme (checkpoint keys `params/<name>`), spelled in
deeplab_resnet by `param_name` (kaffe, which imports nothing of deeplab_resnet,
spells the same scheme in `kaffe.transforms.param_name`; a converted Caffe net
is taken for a DeepLab one only when its names and shapes are `param_shapes()`'s):

    <conv layer>/weights      HWIO kernel, e.g. `res4b22_branch2b/weights`
    <conv layer>/biases       only the head, e.g. `fc1_voc12_c3/biases`
    <bn layer>/mean           BatchNorm moving mean, e.g. `bn_conv1/mean`
    <bn layer>/variance       BatchNorm moving variance
    <bn layer>/scale          the following Caffe Scale layer's gamma
    <bn layer>/offset         the following Caffe Scale layer's beta
"""

import dataclasses

from deeplab_resnet import defaults

HEAD_PREFIX = "fc1_voc12"
ASPP_RATES = (6, 12, 18, 24)

WEIGHTS, BIASES = "weights", "biases"
BN_STATISTICS = ("mean", "variance")  # moving statistics: never trained by gradients
BN_AFFINE = ("scale", "offset")  # the Caffe Scale layer after each BatchNorm
BN_KINDS = BN_STATISTICS + BN_AFFINE


def param_name(layer, kind):
    """`<layer>/<kind>`: the name of one parameter (kind: weights, biases, mean, ...)."""
    return f"{layer}/{kind}"


def param_kind(name):
    """The kind of a parameter name: 'weights', 'mean', ..."""
    return name.rsplit("/", 1)[-1]


def is_head_variable(name):
    """Whether a parameter belongs to the ASPP head (fc1_voc12_*)."""
    return name.startswith(HEAD_PREFIX)


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

    @property
    def weights(self):
        return param_name(self.name, WEIGHTS)

    @property
    def biases(self):
        """Name of the bias vector, None for a convolution without one."""
        return param_name(self.name, BIASES) if self.bias else None

    def bn_param(self, kind):
        """Name of this convolution's BatchNorm parameter `kind` (mean, variance, scale, offset)."""
        return param_name(self.bn, kind)

    def param_shapes(self):
        """{name: TF shape} of this convolution's parameters, BatchNorm included."""
        shapes = {self.weights: (self.kernel, self.kernel, self.in_channels, self.out_channels)}
        if self.bias:
            shapes[self.biases] = (self.out_channels,)
        if self.bn:
            shapes.update({self.bn_param(kind): (self.out_channels,) for kind in BN_KINDS})
        return shapes


@dataclasses.dataclass(frozen=True)
class Pool:
    """A Caffe MAX Pooling in ceil mode."""
    name: str
    bottom: str
    kernel: int
    stride: int
    pad: int


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
    pool: Pool
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

    def param_shapes(self):
        """{name: TF shape} of every parameter of the network, in Caffe order."""
        shapes = {}
        for conv in self.convs:
            shapes.update(conv.param_shapes())
        return shapes


def run(arch, x, conv, pool, join, join_head=None):
    """Walks the network in Caffe order: the one traversal every consumer shares.

    Args:
        arch: an `Architecture`.
        x: the input (a tensor, a blob name, a size: whatever the callables take).
        conv: conv(x, Conv) -> the convolution's output (with its BN/ReLU).
        pool: pool(x, Pool) -> pool1's output.
        join: join(Block, shortcut, branch) -> the block's output (sum, ReLU).
        join_head: join_head([outputs of the ASPP branches]) -> the logits; None
            stops after the backbone (res5's output).
    """
    x = pool(conv(x, arch.stem), arch.pool)
    for block in arch.blocks:
        shortcut = x if block.branch1 is None else conv(x, block.branch1)
        branch = x
        for layer in block.branch2:
            branch = conv(branch, layer)
        x = join(block, shortcut, branch)
    if join_head is None:
        return x
    return join_head([conv(x, layer) for layer in arch.head])


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


def architecture(variant=defaults.VARIANT, num_classes=defaults.NUM_CLASSES):
    """The DeepLab-v2 network of a variant as Caffe-named layers."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant '{variant}' (choose from {', '.join(VARIANTS)})")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    spec = VARIANTS[variant]
    stem = _conv("conv1", "data", 3, spec.stem_width, 7, stride=2, relu=True, bn_suffix="_conv1")
    stem = dataclasses.replace(stem, pad=3)
    pool = Pool(name="pool1", bottom=stem.name, kernel=3, stride=2, pad=1)
    blocks = []
    bottom, channels = pool.name, spec.stem_width
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
    return Architecture(variant=variant, num_classes=num_classes, stem=stem, pool=pool,
                        blocks=tuple(blocks), head=head)


def infer_variant(layer_names):
    """The variant whose backbone convolutions are all among `layer_names` (the largest such).

    For weights that do not record their variant (a converted ImageNet ResNet, the 2017
    port's checkpoints, an .npz): ResNet-152's names include ResNet-101's, and
    ResNet-50's the tiny variant's, hence the largest. None when no variant fits.
    """
    layer_names = set(layer_names)
    best, best_count = None, 0
    for variant in VARIANTS:
        convs = [c.name for c in architecture(variant).convs if not is_head_variable(c.name)]
        if len(convs) > best_count and layer_names.issuperset(convs):
            best, best_count = variant, len(convs)
    return best
