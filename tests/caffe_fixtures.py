"""Test helpers: random caffemodels for a prototxt, Caffe-semantics numpy references."""

import numpy as np

from kaffe.convert import load_net
from kaffe.writer import caffemodel_bytes


def random_blobs(converted, seed=0, bn_factor=0.5, tiny_variance=1e-6):
    """{layer name: [Caffe-layout arrays]} with seeded random values for every weighted layer.

    BatchNorm blobs are stored the Caffe way (mean*f, var*f, [f]) with
    f = `bn_factor`; a few channels get variance `tiny_variance`, so eps matters.
    Convolutions use He-normal weights and gammas below 1, which keeps deep
    residual nets in a sane range.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for layer in converted.graph.layers:
        if not layer.blob_shapes:
            continue
        shapes = layer.blob_shapes
        if layer.type == "Convolution":
            fan_in = int(np.prod(shapes[0][1:]))
            blobs = [rng.normal(0, np.sqrt(2.0 / fan_in), shapes[0])]
            blobs += [rng.normal(0, 0.1, s) for s in shapes[1:]]
        elif layer.type == "InnerProduct":
            blobs = [rng.normal(0, 1.0 / np.sqrt(max(shapes[0])), shapes[0])]
            blobs += [rng.normal(0, 0.1, s) for s in shapes[1:]]
        elif layer.type == "BatchNorm":
            c = shapes[0][0]
            mean = rng.normal(0, 0.5, c)
            var = rng.uniform(0.5, 2.0, c)
            var[rng.random(c) < 0.05] = tiny_variance
            blobs = [mean * bn_factor, var * bn_factor, np.array([bn_factor])]
        elif layer.type == "Scale":
            blobs = [rng.uniform(0.2, 0.8, shapes[0])] + [rng.normal(0, 0.2, s) for s in shapes[1:]]
        else:
            raise AssertionError(layer.type)
        out[layer.name] = [np.asarray(b, np.float32) for b in blobs]
    return out


def load_emitted(converted, folded_eps=None, name="kaffe_emitted"):
    """Imports the code `kaffe.emit` writes for a net, from memory; returns the module."""
    import types

    from kaffe.emit import emit_code
    module = types.ModuleType(name)
    exec(compile(emit_code(converted.graph, converted.steps, folded_eps), f"<{name}>", "exec"),
         module.__dict__)
    return module


def calibrated_blobs(converted, seed=0, bn_factor=0.5, tiny_variance=1e-6, size=65,
                     damp=("branch2c",), damp_gamma=0.05):
    """Random blobs whose BatchNorm statistics match the activations of a random image.

    Random statistics make a deep residual net overflow; here one forward pass
    sets each BatchNorm's mean/variance from the actual batch (perturbed a
    little). A few channels per BatchNorm get variance `tiny_variance` and a
    small gamma, so the result depends on eps without blowing up. BatchNorms
    whose name contains a `damp` string (the last one of a residual branch)
    get their gamma multiplied by `damp_gamma`: the identity path then
    dominates, as in a trained ResNet, and the random net is well-conditioned
    (otherwise rounding differences between two correct implementations grow
    block by block).
    """
    import tensorflow as tf

    from kaffe.transforms import make_params
    rng = np.random.default_rng(seed)
    blobs = random_blobs(converted, seed=seed, bn_factor=1.0)
    module = load_emitted(converted)
    net = module.Net()
    net.assign(make_params(converted.steps, blobs))
    stats = {}

    def calibrating_batch_norm(x, name):
        mean = tf.reduce_mean(x, axis=list(range(len(x.shape) - 1)))
        var = tf.math.reduce_variance(x, axis=list(range(len(x.shape) - 1)))
        c = int(mean.shape[0])
        mean = mean.numpy() + rng.normal(0, 0.05, c) * np.sqrt(var.numpy())
        var = var.numpy() * rng.uniform(0.8, 1.25, c) + 1e-3
        tiny = rng.random(c) < 0.05
        var[tiny] = tiny_variance
        p = net.params
        scale = p[name + "/scale"].numpy()
        if any(d in name for d in damp):
            scale = scale * damp_gamma
        scale[tiny] = 1e-3
        p[name + "/scale"].assign(scale)
        p[name + "/mean"].assign(mean.astype(np.float32))
        p[name + "/variance"].assign(var.astype(np.float32))
        stats[name] = (mean, var, scale)
        return module.layers.batch_norm(x, p[name + "/mean"], p[name + "/variance"],
                                        p[name + "/scale"], p[name + "/offset"], module.BN_EPS[name])

    net._batch_norm = calibrating_batch_norm
    shapes = {k: (v[0], size, size, v[3]) if len(v) == 4 else v
              for k, v in module.INPUT_SHAPES.items()}
    net({k: rng.normal(0, 60, s).astype(np.float32) for k, s in shapes.items()})
    from kaffe.graph import bn_layer
    for step in converted.steps:
        bn = bn_layer(step)
        if bn is None:
            continue
        mean, var, scale = stats[bn.name]
        blobs[bn.name] = [np.float32(mean * bn_factor), np.float32(var * bn_factor),
                          np.array([bn_factor], np.float32)]
        if step.scale is not None:
            blobs[step.scale.name][0] = scale.astype(np.float32)
    return blobs


def write_random_caffemodel(prototxt, path, seed=0, bn_factor=0.5, text=None, calibrate=False,
                            calibration=None, **kwargs):
    """Writes a random caffemodel for a prototxt file (or text); returns the blobs.

    `calibrate` (for deep nets): BatchNorm statistics from a forward pass, see
    `calibrated_blobs` (`calibration`: its keyword arguments).
    """
    converted = load_net(prototxt, text=text)
    if calibrate:
        blobs = calibrated_blobs(converted, seed=seed, bn_factor=bn_factor, **(calibration or {}))
    else:
        blobs = random_blobs(converted, seed=seed, bn_factor=bn_factor)
    with open(path, "wb") as f:
        f.write(caffemodel_bytes(converted, blobs, **kwargs))
    return blobs


def caffe_interp(x, out_h, out_w):
    """Caffe's `Interp` layer (DeepLab's caffe_cpu_interp2), transcribed: NHWC float32, align corners.

    Output (h2, w2) reads input position (rheight*h2, rwidth*w2) with
    rheight = (H-1)/(out_h-1) in float32 (0 for a single output row), bilinear.
    """
    x = np.asarray(x, np.float32)
    height1, width1 = x.shape[1:3]
    rheight = np.float32(height1 - 1) / np.float32(out_h - 1) if out_h > 1 else np.float32(0)
    rwidth = np.float32(width1 - 1) / np.float32(out_w - 1) if out_w > 1 else np.float32(0)
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]), np.float32)
    for h2 in range(out_h):
        h1r = np.float32(rheight * h2)
        h1 = int(h1r)
        h1p = 1 if h1 < height1 - 1 else 0
        h1lambda = np.float32(h1r - h1)
        h0lambda = np.float32(1) - h1lambda
        for w2 in range(out_w):
            w1r = np.float32(rwidth * w2)
            w1 = int(w1r)
            w1p = 1 if w1 < width1 - 1 else 0
            w1lambda = np.float32(w1r - w1)
            w0lambda = np.float32(1) - w1lambda
            out[:, h2, w2] = (h0lambda * (w0lambda * x[:, h1, w1] + w1lambda * x[:, h1, w1 + w1p])
                              + h1lambda * (w0lambda * x[:, h1 + h1p, w1]
                                            + w1lambda * x[:, h1 + h1p, w1 + w1p]))
    return out


def interp_size(size, shrink=1, zoom=1):
    """Caffe Interp's output side for shrink/zoom factors (DeepLab's MSC: 0.75 = zoom 3, shrink 4)."""
    size = (size - 1) // shrink + 1
    return size + (size - 1) * (zoom - 1)


def deeplab_label_shrink(labels, out_h, out_w):
    """[N, H, W] labels -> [N, out_h, out_w]: the label pixel nearest to i*(H-1)/(out_h-1)."""
    _, h, w = labels.shape
    ys = np.floor(np.arange(out_h) * (h - 1) / max(out_h - 1, 1) + 0.5).astype(int)
    xs = np.floor(np.arange(out_w) * (w - 1) / max(out_w - 1, 1) + 0.5).astype(int)
    return labels[:, ys][:, :, xs]


def deeplab_zoom_to_image(logits, h, w, stride=8):
    """DeepLab's test-time geometry: zoom the logits x`stride` with Interp, crop to h x w.

    Where the image reaches past the zoomed logits (sizes not 8k+1), the last
    row/column is repeated: pixel p reads logit position min(p/8, last).
    """
    lh, lw = logits.shape[1:3]
    zoomed = caffe_interp(logits, (lh - 1) * stride + 1, (lw - 1) * stride + 1)
    zh, zw = zoomed.shape[1:3]
    zoomed = np.pad(zoomed, [(0, 0), (0, max(0, h - zh)), (0, max(0, w - zw)), (0, 0)], mode="edge")
    return zoomed[:, :h, :w]
