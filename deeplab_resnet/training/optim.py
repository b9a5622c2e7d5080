"""Optimizers (Caffe's SGD, TF1's Adam), DeepLab's learning-rate multipliers, the poly schedule."""

import tensorflow as tf

# Caffe DeepLab's lr_mult for the head (fc1_voc12_*): weights 10x, biases 20x.
HEAD_WEIGHT_LR_MULT = 10.0
HEAD_BIAS_LR_MULT = 20.0


class CaffeSGD(tf.Module):
    """Caffe's SGD: v <- m*v + lr*lr_mult*(g + wd*decay_mult*w); w <- w - v.

    The learning rate sits inside the velocity, as in Caffe (TF1's
    MomentumOptimizer put it outside, which differs once the rate changes).

    Args:
        params: {name: (variable, lr_mult, decay_mult)}; slots are created
            now, so a checkpoint restores into them directly.
        momentum: m.
        weight_decay: wd.
    """

    def __init__(self, params, momentum=0.9, weight_decay=5e-4, name=None):
        super().__init__(name=name or "caffe_sgd")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.lr_mult = {k: float(lr) for k, (_, lr, _) in params.items()}
        self.decay_mult = {k: float(dm) for k, (_, _, dm) in params.items()}
        self.velocity = {k: tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                        name=f"velocity/{k}")
                         for k, (v, _, _) in params.items()}

    def apply(self, updates, learning_rate):
        """One update. `updates`: [(name, gradient, variable)]."""
        for key, grad, var in updates:
            velocity = self.velocity[key]
            step = grad
            decay = self.weight_decay * self.decay_mult[key]
            if decay:
                step = step + decay * var
            velocity.assign(self.momentum * velocity + learning_rate * self.lr_mult[key] * step)
            var.assign_sub(velocity)


class Adam(tf.Module):
    """Adam as TF1's AdamOptimizer (what the 2017 port's fine_tune.py used).

    Args:
        params: {name: variable}; slots are created now.
        beta1, beta2, epsilon: Adam's constants.
    """

    def __init__(self, params, beta1=0.9, beta2=0.999, epsilon=1e-8, name=None):
        super().__init__(name=name or "adam")
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
        self.m = {k: tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"m/{k}")
                  for k, v in params.items()}
        self.v = {k: tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"v/{k}")
                  for k, v in params.items()}

    def apply(self, updates, learning_rate):
        """One update. `updates`: [(name, gradient, variable)]."""
        t = tf.cast(self.iterations + 1, tf.float32)
        rate = learning_rate * tf.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        for key, grad, var in updates:
            m, v = self.m[key], self.v[key]
            m.assign(self.beta1 * m + (1.0 - self.beta1) * grad)
            v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(grad))
            var.assign_sub(rate * m / (tf.sqrt(v) + self.epsilon))
        self.iterations.assign_add(1)


def sgd_params(model):
    """{name: (variable, lr_mult, decay_mult)} with DeepLab's multipliers.

    Backbone weights 1x, head weights 10x, head biases 20x, trained BatchNorm
    scale/offset 1x; weight decay on convolution weights only.
    """
    names = {id(v): k for k, v in model.params.items()}
    decayed = {id(v) for v in model.weight_decay_variables()}
    groups = ((model.backbone_weights(), 1.0), (model.head_weights(), HEAD_WEIGHT_LR_MULT),
              (model.head_biases(), HEAD_BIAS_LR_MULT), (model.bn_trainables(), 1.0))
    return {names[id(v)]: (v, lr_mult, 1.0 if id(v) in decayed else 0.0)
            for variables, lr_mult in groups for v in variables}


def poly_learning_rate(base, step, num_steps, power):
    """Caffe's poly policy: base * (1 - step / num_steps) ** power."""
    return base * max(0.0, 1.0 - step / num_steps) ** power
