"""Every supported layer type against a numpy reference of Caffe's semantics (NCHW)."""

import numpy as np
import pytest

from caffe_fixtures import caffemodel_bytes, load_emitted, random_blobs
from kaffe.convert import load_net, read_weights


def header(n=2, c=4, h=9, w=9):
    return f'input: "data"\ninput_dim: {n}\ninput_dim: {c}\ninput_dim: {h}\ninput_dim: {w}\n'


def to_nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x


def to_nchw(x):
    return x.transpose(0, 3, 1, 2) if x.ndim == 4 else x


def run_net(tmp_path, text, inputs, outputs=None, blobs=None, v1_model=False, seed=1):
    """Converts `text` with random (or given) blobs through a caffemodel file; runs emitted code.

    Returns ({blob: NCHW array}, {layer: Caffe blobs}).
    """
    converted = load_net(text=text)
    if blobs is None:
        blobs = random_blobs(converted, seed=seed, bn_factor=0.5)
    path = tmp_path / "net.caffemodel"
    path.write_bytes(caffemodel_bytes(converted, blobs, v1=v1_model))
    params = read_weights(converted, path)
    net = load_emitted(converted).Net()
    net.assign(params)
    feed = {k: to_nhwc(np.asarray(v, np.float32)) for k, v in inputs.items()}
    out = net(feed, outputs)
    return {k: to_nchw(v.numpy()) for k, v in out.items()}, blobs


# -- numpy references -------------------------------------------------------------------------

def conv_ref(x, w, b, stride, pad, dilation, group):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for g in range(group):
        xs, ws = xp[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dilation[0], j * dilation[1]
                patch = xs[:, :, y0:y0 + stride[0] * (oh - 1) + 1:stride[0],
                           x0:x0 + stride[1] * (ow - 1) + 1:stride[1]]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    if b is not None:
        out += b[None, :, None, None]
    return out


def pool_ref(x, method, kernel, stride, pad, ceil_mode=True):
    """Caffe's PoolingLayer::Forward_cpu, loop for loop."""
    n, c, h, w = x.shape
    rnd = np.ceil if ceil_mode else np.floor
    oh = int(rnd((h + 2 * pad[0] - kernel[0]) / stride[0])) + 1
    ow = int(rnd((w + 2 * pad[1] - kernel[1]) / stride[1])) + 1
    if pad[0] or pad[1]:
        if (oh - 1) * stride[0] >= h + pad[0]:
            oh -= 1
        if (ow - 1) * stride[1] >= w + pad[1]:
            ow -= 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * stride[0] - pad[0], j * stride[1] - pad[1]
            he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            out[:, :, i, j] = window.max((2, 3)) if method == "MAX" else window.sum((2, 3)) / size
    return out


def bn_ref(x, blobs, eps=1e-5):
    f = blobs[2][0]
    inv = 0.0 if f == 0 else 1.0 / f
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - (blobs[0] * inv).reshape(shape)) / np.sqrt((blobs[1] * inv).reshape(shape) + eps)


def close(a, b, tol=1e-4):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.normal(0, 1, shape).astype(np.float32)


# -- Convolution ------------------------------------------------------------------------------

CONVS = [
    # (convolution_param body, kernel, stride, pad, dilation, group, bias)
    ("num_output: 6 kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), (1, 1), 1, True),
    ("num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 "
     "bias_term: false",
     (3, 2), (2, 1), (1, 0), (1, 1), 1, False),
    ("num_output: 6 kernel_size: 3 pad: 2 dilation: 2 group: 2",
     (3, 3), (1, 1), (2, 2), (2, 2), 2, True),
    ("num_output: 4 kernel_size: 3 pad: 3 dilation: 3 stride: 2 group: 4 bias_term: false",
     (3, 3), (2, 2), (3, 3), (3, 3), 4, False),
    ("num_output: 6 kernel_size: 3 kernel_size: 1 stride: 1 stride: 2 pad: 1 pad: 0",
     (3, 1), (1, 2), (1, 0), (1, 1), 1, True),
]


@pytest.mark.parametrize("size", [9, 10])
@pytest.mark.parametrize("body,kernel,stride,pad,dilation,group,bias", CONVS)
def test_convolution(tmp_path, size, body, kernel, stride, pad, dilation, group, bias):
    text = header(h=size, w=size + 1) + (
        f'layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        f'convolution_param {{ {body} }} }}')
    x = rand(2, 4, size, size + 1)
    out, blobs = run_net(tmp_path, text, {"data": x})
    w, b = blobs["conv"][0], (blobs["conv"][1] if bias else None)
    close(out["conv"], conv_ref(x, w, b, stride, pad, dilation, group))


# -- Pooling ----------------------------------------------------------------------------------

POOLS = [((3, 3), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1)), ((2, 2), (2, 2), (0, 0)),
         ((3, 3), (3, 3), (1, 1)), ((3, 2), (2, 1), (1, 0)), ((7, 7), (1, 1), (0, 0))]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("size", [7, 8, 9, 10])
@pytest.mark.parametrize("kernel,stride,pad", POOLS)
def test_pooling_ceil_mode(tmp_path, method, size, kernel, stride, pad):
    text = header(h=size, w=size + 3) + (
        f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param {{ '
        f'pool: {method} kernel_h: {kernel[0]} kernel_w: {kernel[1]} stride_h: {stride[0]} '
        f'stride_w: {stride[1]} pad_h: {pad[0]} pad_w: {pad[1]} }} }}')
    x = rand(2, 4, size, size + 3)
    out, _ = run_net(tmp_path, text, {"data": x})
    close(out["pool"], pool_ref(x, method, kernel, stride, pad))


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_floor_mode_and_global(tmp_path, method):
    text = header(h=8, w=9) + (
        f'layer {{ name: "p1" type: "Pooling" bottom: "data" top: "p1" pooling_param {{ '
        f'pool: {method} kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR }} }}\n'
        f'layer {{ name: "p2" type: "Pooling" bottom: "data" top: "p2" pooling_param {{ '
        f'pool: {method} global_pooling: true }} }}')
    x = rand(2, 4, 8, 9)
    out, _ = run_net(tmp_path, text, {"data": x}, outputs=["p1", "p2"])
    close(out["p1"], pool_ref(x, method, (3, 3), (2, 2), (1, 1), ceil_mode=False))
    ref = x.max((2, 3), keepdims=True) if method == "MAX" else x.mean((2, 3), keepdims=True)
    close(out["p2"], ref)


def test_max_pool_padding_never_wins(tmp_path):
    text = header(h=5, w=5) + (
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
        'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }')
    x = -np.abs(rand(2, 4, 5, 5)) - 1.0  # all negative: a zero pad would win
    out, _ = run_net(tmp_path, text, {"data": x})
    assert out["pool"].max() < 0
    close(out["pool"], pool_ref(x, "MAX", (3, 3), (2, 2), (1, 1)))


# -- BatchNorm, Scale, ReLU, in place ---------------------------------------------------------

@pytest.mark.parametrize("factor", [0.5, 999.98, 0.0])
def test_batchnorm_scale_relu_in_place(tmp_path, factor):
    text = header() + """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv"
        batch_norm_param { use_global_stats: true eps: 0.001 } }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"""
    converted = load_net(text=text)
    blobs = random_blobs(converted, seed=3, bn_factor=factor)
    blobs["bn"][1][:2] = 1e-6 * factor  # tiny variances: eps matters
    x = rand(2, 4, 9, 9)
    out, _ = run_net(tmp_path, text, {"data": x}, blobs=blobs)
    y = conv_ref(x, blobs["conv"][0], blobs["conv"][1], (1, 1), (0, 0), (1, 1), 1)
    y = bn_ref(y, blobs["bn"], eps=1e-3)
    y = y * blobs["sc"][0][None, :, None, None] + blobs["sc"][1][None, :, None, None]
    close(out["conv"], np.maximum(y, 0))
    assert [m.name for m in converted.steps[0].members] == ["conv", "bn", "sc", "relu"]


def test_batchnorm_without_scale_and_standalone_scale(tmp_path):
    text = header() + """
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }
layer { name: "sc" type: "Scale" bottom: "bn" top: "sc" }
layer { name: "sc2" type: "Scale" bottom: "data" top: "sc2" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "sc2" top: "r" relu_param { negative_slope: 0.1 } }
"""
    # `sc` follows `bn` but is fused into it; `sc2` stands alone (with a leaky ReLU fused).
    x = rand(2, 4, 9, 9)
    out, blobs = run_net(tmp_path, text, {"data": x}, outputs=["sc", "r"])
    ref = bn_ref(x, blobs["bn"]) * blobs["sc"][0][None, :, None, None]
    close(out["sc"], ref)
    y = x * blobs["sc2"][0][None, :, None, None] + blobs["sc2"][1][None, :, None, None]
    close(out["r"], np.maximum(y, 0) + 0.1 * np.minimum(y, 0))


def test_bn_alone_gets_unit_scale(tmp_path):
    from kaffe.transforms import make_params
    text = header() + 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }\n' \
                      'layer { name: "r" type: "ReLU" bottom: "data" top: "data" ' \
                      'relu_param { negative_slope: -2.5 } }'
    converted = load_net(text=text)
    blobs = random_blobs(converted, bn_factor=4.0)
    params = make_params(converted.steps, blobs)
    assert sorted(params) == ["bn/mean", "bn/offset", "bn/scale", "bn/variance"]
    np.testing.assert_array_equal(params["bn/scale"], 1)
    np.testing.assert_array_equal(params["bn/offset"], 0)
    np.testing.assert_allclose(params["bn/mean"], blobs["bn"][0] / 4.0, rtol=1e-6)
    x = rand(2, 4, 9, 9)
    out, _ = run_net(tmp_path, text, {"data": x}, blobs=blobs)
    y = bn_ref(x, blobs["bn"])
    close(out["data"], np.maximum(y, 0) - 2.5 * np.minimum(y, 0))


# -- InnerProduct, Softmax, Dropout -----------------------------------------------------------

def test_inner_product_chw_order_and_softmax(tmp_path):
    text = header(h=3, w=5) + """
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        inner_product_param { num_output: 7 } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" dropout_param { dropout_ratio: 0.3 } }
layer { name: "fc2" type: "InnerProduct" bottom: "fc" top: "fc2"
        inner_product_param { num_output: 3 bias_term: false } }
layer { name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }
"""
    x = rand(2, 4, 3, 5)
    out, blobs = run_net(tmp_path, text, {"data": x}, outputs=["fc", "fc2", "prob"])
    fc = x.reshape(2, -1) @ blobs["fc"][0].T + blobs["fc"][1]  # Caffe flattens C-H-W
    close(out["fc"], fc)
    fc2 = fc @ blobs["fc2"][0].T
    close(out["fc2"], fc2)
    e = np.exp(fc2 - fc2.max(1, keepdims=True))
    close(out["prob"], e / e.sum(1, keepdims=True))


def test_inner_product_transpose(tmp_path):
    text = header(h=2, w=2) + ('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                               'inner_product_param { num_output: 5 transpose: true } }')
    x = rand(2, 4, 2, 2)
    out, blobs = run_net(tmp_path, text, {"data": x})
    assert blobs["fc"][0].shape == (16, 5)
    close(out["fc"], x.reshape(2, -1) @ blobs["fc"][0] + blobs["fc"][1])


def test_softmax_over_channels_and_dropout_identity(tmp_path):
    text = header() + """
layer { name: "drop" type: "Dropout" bottom: "data" top: "d" }
layer { name: "prob" type: "Softmax" bottom: "d" top: "prob" }
"""
    x = rand(2, 4, 9, 9)
    out, _ = run_net(tmp_path, text, {"data": x}, outputs=["d", "prob"])
    close(out["d"], x)
    e = np.exp(x - x.max(1, keepdims=True))
    close(out["prob"], e / e.sum(1, keepdims=True))


# -- Eltwise, Concat --------------------------------------------------------------------------

@pytest.mark.parametrize("op,coeff", [("SUM", None), ("SUM", (0.5, -2.0, 3.0)), ("PROD", None),
                                      ("MAX", None)])
def test_eltwise(tmp_path, op, coeff):
    coeffs = " ".join(f"coeff: {c}" for c in coeff or ())
    text = header() + f"""
layer {{ name: "a" type: "Scale" bottom: "data" top: "a" }}
layer {{ name: "b" type: "Scale" bottom: "data" top: "b" scale_param {{ bias_term: true }} }}
layer {{ name: "e" type: "Eltwise" bottom: "data" bottom: "a" bottom: "b" top: "e"
        eltwise_param {{ operation: {op} {coeffs} }} }}
"""
    x = rand(2, 4, 9, 9)
    out, blobs = run_net(tmp_path, text, {"data": x})
    a = x * blobs["a"][0][None, :, None, None]
    b = x * blobs["b"][0][None, :, None, None] + blobs["b"][1][None, :, None, None]
    if op == "SUM":
        c = coeff or (1, 1, 1)
        ref = c[0] * x + c[1] * a + c[2] * b
    elif op == "PROD":
        ref = x * a * b
    else:
        ref = np.maximum(np.maximum(x, a), b)
    close(out["e"], ref)


def test_concat_channels_and_two_inputs(tmp_path):
    text = """
input: "data" input_dim: 2 input_dim: 4 input_dim: 6 input_dim: 7
input: "extra" input_dim: 2 input_dim: 3 input_dim: 6 input_dim: 7
layer { name: "cat" type: "Concat" bottom: "data" bottom: "extra" top: "cat" }
layer { name: "cat2" type: "Concat" bottom: "data" bottom: "data" top: "cat2"
        concat_param { axis: 2 } }
"""
    x, y = rand(2, 4, 6, 7), rand(2, 3, 6, 7)
    out, _ = run_net(tmp_path, text, {"data": x, "extra": y})
    close(out["cat"], np.concatenate([x, y], 1))
    close(out["cat2"], np.concatenate([x, x], 2))


# -- prototxt forms ---------------------------------------------------------------------------

NEW_BODY = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "drop" type: "Dropout" bottom: "pool" top: "pool" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "pool" bottom: "label" top: "loss"
        include { phase: TRAIN } loss_param { ignore_label: 255 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
        inner_product_param { num_output: 3 } }
"""
V1_BODY = """
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
         blobs_lr: 1 blobs_lr: 2
         convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "pool" type: POOLING bottom: "conv" top: "pool"
         pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layers { name: "drop" type: DROPOUT bottom: "pool" top: "pool" exclude { phase: TRAIN } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool" top: "fc"
         inner_product_param { num_output: 3 } }
"""
INPUTS = {
    "input_dim": header(h=9, w=10),
    "input_shape": 'input: "data"\ninput_shape { dim: 2 dim: 4 dim: 9 dim: 10 }\n',
    "Input layer": 'layer { name: "in" type: "Input" top: "data" '
                   'input_param { shape { dim: 2 dim: 4 dim: 9 dim: 10 } } }\n',
}


@pytest.mark.parametrize("form", ["new", "v1", "v1 caffemodel"])
@pytest.mark.parametrize("inputs", sorted(INPUTS))
def test_prototxt_forms_agree(tmp_path, form, inputs):
    if form != "new" and inputs == "Input layer":
        pytest.skip("V1 has no Input layer")
    x = rand(2, 4, 9, 10)
    ref_text = INPUTS["input_dim"] + NEW_BODY
    ref, blobs = run_net(tmp_path, ref_text, {"data": x}, seed=5)
    text = INPUTS[inputs] + (NEW_BODY if form == "new" else V1_BODY)
    out, _ = run_net(tmp_path, text, {"data": x}, blobs=blobs, v1_model=form == "v1 caffemodel")
    np.testing.assert_array_equal(out["fc"], ref["fc"])
    y = conv_ref(x, blobs["conv"][0], blobs["conv"][1], (2, 2), (1, 1), (1, 1), 1)
    y = pool_ref(np.maximum(y, 0), "AVE", (3, 3), (2, 2), (1, 1))
    close(out["fc"], y.reshape(2, -1) @ blobs["fc"][0].T + blobs["fc"][1])


def test_legacy_blob_shapes(tmp_path):
    text = INPUTS["input_dim"] + NEW_BODY
    converted = load_net(text=text)
    blobs = random_blobs(converted, seed=2)
    path = tmp_path / "legacy.caffemodel"
    path.write_bytes(caffemodel_bytes(converted, blobs, legacy_shapes=True))
    params = read_weights(converted, path)
    np.testing.assert_array_equal(params["conv/weights"], blobs["conv"][0].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(params["fc/biases"], blobs["fc"][1])
