"""An independent numpy implementation of a Keras mini-Xception, read straight from the
.hdf5: the oracle the ONNX translation (fr_cpu.emotion) is tested against.

Written apart from the converter on purpose: channels-last as Keras computes, TensorFlow's
"same" padding rule derived here again, max-pool padding with -inf, its own weight lookup.
A bug the two shared would have to be made twice.
"""

from __future__ import annotations

import json
import math

import h5py
import numpy as np


def _pad_same(x: np.ndarray, k: int, s: int, value: float) -> np.ndarray:
    """x: N, H, W, C. Pads H and W as TensorFlow does for padding="same"."""
    pads = []
    for size in x.shape[1:3]:
        out = math.ceil(size / s)
        total = max((out - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=value)


def _windows(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """N, OH, OW, k, k, C views of every k x k window with stride s (x already padded)."""
    n, h, w, c = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    st = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, oh, ow, k, k, c), (st[0], st[1] * s, st[2] * s, st[1], st[2], st[3])
    )


def conv2d(x, kernel, bias, stride, padding):
    k = kernel.shape[0]
    if padding == "same":
        x = _pad_same(x, k, stride, 0.0)
    y = np.einsum("nhwijc,ijco->nhwo", _windows(x, k, stride), kernel, optimize=True)
    return y + bias if bias is not None else y


def depthwise2d(x, kernel, padding):
    k = kernel.shape[0]
    if padding == "same":
        x = _pad_same(x, k, 1, 0.0)
    return np.einsum("nhwijc,ijc->nhwc", _windows(x, k, 1), kernel[:, :, :, 0], optimize=True)


def maxpool2d(x, k, s, padding):
    if padding == "same":
        x = _pad_same(x, k, s, -np.inf)
    return _windows(x, k, s).max(axis=(3, 4))


def forward(h5_path, batch_nhwc: np.ndarray) -> np.ndarray:
    """Class probabilities for a batch of N x 64 x 64 x 1 inputs (already scaled)."""
    with h5py.File(h5_path, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
        g = f["model_weights"]
        params = {}
        for name in g:
            for wname in g[name].attrs.get("weight_names", []):
                wname = wname.decode() if isinstance(wname, bytes) else wname
                key = wname.split("/")[-1].split(":")[0]
                params[(name, key)] = np.array(g[name][wname], np.float64)
    out = {}
    x = None
    for layer in layers:
        kind, c = layer["class_name"], layer["config"]
        name = c["name"]
        ins = [out[n[0]] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []

        def p(key, name=name):
            return params.get((name, key))

        if kind == "InputLayer":
            x = batch_nhwc.astype(np.float64)
        elif kind == "Conv2D":
            x = conv2d(ins[0], p("kernel"), p("bias"), c["strides"][0], c["padding"])
        elif kind == "SeparableConv2D":
            x = depthwise2d(ins[0], p("depthwise_kernel"), c["padding"])
            x = conv2d(x, p("pointwise_kernel"), p("bias"), 1, "valid")
        elif kind == "BatchNormalization":
            x = (ins[0] - p("moving_mean")) / np.sqrt(p("moving_variance") + c["epsilon"])
            x = x * p("gamma") + p("beta")
        elif kind == "Activation":
            x = ins[0]
        elif kind == "MaxPooling2D":
            x = maxpool2d(ins[0], c["pool_size"][0], c["strides"][0], c["padding"])
        elif kind == "Add":
            x = ins[0] + ins[1]
        elif kind == "GlobalAveragePooling2D":
            x = ins[0].mean(axis=(1, 2))
        else:
            raise NotImplementedError(kind)
        act = c.get("activation", "linear")
        if act == "relu":
            x = np.maximum(x, 0)
        elif act == "softmax":
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            x = e / e.sum(axis=-1, keepdims=True)
        out[name] = x
    return np.asarray(x)
