"""DeepLab-v2 atrous ResNet with the ASPP head, named after the Caffe layers.

The network is described once, in `deeplab_resnet.model.arch` (layers, parameter
names and shapes, the traversal); `DeepLabResNet` creates its variables from
that description and runs it.
"""

import numpy as np
import tensorflow as tf

from deeplab_resnet.model import arch as arch_lib
from deeplab_resnet import defaults
from deeplab_resnet.model import layers

IMG_MEAN = np.array(defaults.IMG_MEAN_BGR, dtype=np.float32)  # B, G, R


def output_size(size, variant=defaults.VARIANT):
    """Logit size for an input size (int), exactly as Caffe computes it."""
    def conv(x, c):
        return layers.conv_output_size(x, c.kernel, c.stride, c.pad, c.dilation)

    def pool(x, p):
        return layers.pool_output_size(x, p.kernel, p.stride, p.pad)

    return arch_lib.run(arch_lib.architecture(variant, 1), size, conv, pool,
                        join=lambda block, shortcut, branch: branch,
                        join_head=lambda outputs: outputs[0])


def max_pool(x, pool):
    """An `arch.Pool` applied to NHWC features."""
    return layers.max_pool(x, pool.kernel, pool.stride, pool.pad)


def residual(block, shortcut, branch):
    """A bottleneck's output: relu(branch + shortcut)."""
    return tf.nn.relu(branch + shortcut)


def preprocess(images):
    """RGB images (0-255, any numeric dtype) -> BGR float32 minus IMG_MEAN.

    The one preprocessing function of the project: the released Caffe models
    expect BGR on the 0-255 scale with the per-channel mean removed.
    """
    images = tf.cast(images, tf.float32)
    return images[..., ::-1] - IMG_MEAN


# BatchNorm parameters start as the identity map.
_BN_INITIAL = {"mean": 0.0, "variance": 1.0, "scale": 1.0, "offset": 0.0}


def _random_std(conv, key):
    """Standard deviation of a convolution's initial weights: He-normal, N(0, 0.01) in the
    head."""
    if arch_lib.is_head_variable(key):
        return 0.01
    return np.sqrt(2.0 / (conv.kernel * conv.kernel * conv.in_channels))


def initial_parameter_values(arch, seed=0, given=None):
    """{parameter name: float32 initial value} of a network: `given`'s values, the rest new.

    Convolution weights not given are drawn from one generator seeded by `seed`, in
    the architecture's order, so each gets the value it gets when nothing is given
    (a new head on a loaded backbone is the head of a new network of that seed);
    when every weight is given, nothing is drawn (the 43 M draws of ResNet-101 cost
    over a second). Biases not given start at 0, BatchNorm at the identity.

    Args:
        arch: an `arch.Architecture`.
        seed: seed of the random weights.
        given: {parameter name: array}, or None; names the architecture does not
            have are ignored.
    Returns:
        {name: numpy array or tensor}, in the architecture's order.
    Raises:
        ValueError: a given value of another shape than its parameter's.
    """
    given = given or {}
    shapes = {key: tuple(shape) for key, shape in arch.param_shapes().items()}
    random = any(arch_lib.param_kind(key) == arch_lib.WEIGHTS and key not in given
                 for key in shapes)
    rng = np.random.default_rng(seed) if random else None
    values = {}
    for conv in arch.convs:
        for key in conv.param_shapes():
            kind, shape = arch_lib.param_kind(key), shapes[key]
            drawn = None
            if kind == arch_lib.WEIGHTS and rng is not None:
                # Drawn even when given, so that the weights drawn after it are the same.
                drawn = rng.normal(0.0, _random_std(conv, key), shape).astype(np.float32)
            if key in given:
                value = np.asarray(given[key], dtype=np.float32)
                if value.shape != shape:
                    raise ValueError(f"initial value of '{key}' has shape {value.shape}, "
                                     f"the parameter {shape}")
            else:
                value = drawn if drawn is not None else tf.fill(shape, _BN_INITIAL.get(kind, 0.0))
            values[key] = value
    return values


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
        initial_values: {parameter name: array} the variables start from (e.g.
            weights read from a file); parameters not given start random (seeded
            by `seed`, the values they get without `initial_values`) or, for
            BatchNorm, at the identity. See `initial_parameter_values`.
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

    def __init__(self, variant=defaults.VARIANT, num_classes=defaults.NUM_CLASSES, train_bn=False,
                 bn_eps=defaults.BN_EPS, bn_momentum=defaults.BN_MOMENTUM, seed=0, fold_bn=True,
                 initial_values=None, name=None):
        super().__init__(name=name or "deeplab_resnet")
        self.arch = arch_lib.architecture(variant, num_classes)
        self.variant = variant
        self.num_classes = num_classes
        self.train_bn = train_bn
        self.bn_eps = bn_eps
        self.bn_momentum = bn_momentum
        self.fold_bn = bool(fold_bn)
        params = {}
        for key, value in initial_parameter_values(self.arch, seed, initial_values).items():
            kind = arch_lib.param_kind(key)
            trainable = (kind not in arch_lib.BN_KINDS
                         or (train_bn and kind in arch_lib.BN_AFFINE))
            params[key] = tf.Variable(value, trainable=trainable, name=key)
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

    def _variables(self, kinds, head=None):
        return [v for k, v in self.params.items() if arch_lib.param_kind(k) in kinds
                and (head is None or arch_lib.is_head_variable(k) == head)]

    def backbone_weights(self):
        return self._variables((arch_lib.WEIGHTS,), head=False)

    def head_weights(self):
        return self._variables((arch_lib.WEIGHTS,), head=True)

    def head_biases(self):
        return self._variables((arch_lib.BIASES,), head=True)

    def bn_trainables(self):
        return self._variables(arch_lib.BN_AFFINE) if self.train_bn else []

    def weight_decay_variables(self):
        """Convolution weights only: no biases, no BatchNorm."""
        return self._variables((arch_lib.WEIGHTS,))

    # -- forward ------------------------------------------------------------------------------

    def _conv_bn(self, x, conv, training):
        p = self.params
        dtype = x.dtype
        weights = p[conv.weights]
        biases = p[conv.biases] if conv.bias else None
        fold = conv.bn and self.fold_bn and not (training and self.train_bn)
        if fold:
            # Frozen BatchNorm is a per-channel affine map: one convolution with
            # W * a and a bias instead of two passes over the activations, forward
            # and backward. Folded in float32 inside the step, so gradients reach W.
            weights, biases = layers.fold_batch_norm(
                weights, biases, *(p[conv.bn_param(k)] for k in arch_lib.BN_KINDS),
                eps=self.bn_eps)
        y = layers.conv2d(x, tf.cast(weights, dtype),
                          tf.cast(biases, dtype) if biases is not None else None,
                          stride=conv.stride, pad=conv.pad, dilation=conv.dilation)
        if conv.bn and not fold:
            y = self._batch_norm(y, conv, training)
        if conv.relu:
            y = tf.nn.relu(y)
        return y

    def _batch_norm(self, x, conv, training):
        p = self.params
        mean, var = p[conv.bn_param("mean")], p[conv.bn_param("variance")]
        if training and self.train_bn:
            batch_mean, batch_var, count = layers.batch_moments(tf.cast(x, tf.float32), shift=mean)
            unbiased = batch_var * count / tf.maximum(count - 1.0, 1.0)
            history = self.bn_momentum * self.meta["bn_factor"]
            total = history + 1.0
            mean.assign((history * mean + batch_mean) / total)
            var.assign((history * var + unbiased) / total)
            mean, var = batch_mean, batch_var
        return layers.batch_norm(x, mean, var, p[conv.bn_param("scale")],
                                 p[conv.bn_param("offset")], self.bn_eps)

    def features(self, images, training=False):
        """Backbone output (the last res5 block's, `res5c` in the released nets) for preprocessed
        images."""
        return arch_lib.run(self.arch, images,
                            conv=lambda x, conv: self._conv_bn(x, conv, training),
                            pool=max_pool, join=residual)

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
