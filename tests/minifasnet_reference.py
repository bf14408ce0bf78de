"""An independent forward pass of a MiniFASNet checkpoint in plain numpy, to check the ONNX
converter (plugins/fr_cpu/minifasnet.py) against: BatchNorm applied as written (not folded),
convolutions as explicit sums over kernel offsets, the network walked from the names of the
tensors rather than from the converter's layer list."""

from __future__ import annotations

import numpy as np

EPS = 1e-5


def conv2d(x, w, stride, pad, groups):
    """x: C x H x W, w: O x C/groups x k x k -> O x H' x W' (no bias)."""
    _, h, wd = x.shape
    o, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((o, ho, wo), np.float64)
    og = o // groups
    for g in range(groups):
        xs = xp[g * cg : (g + 1) * cg]
        ws = w[g * og : (g + 1) * og]
        for i in range(k):
            for j in range(k):
                patch = xs[:, i : i + stride * ho : stride, j : j + stride * wo : stride]
                out[g * og : (g + 1) * og] += np.einsum("oc,chw->ohw", ws[:, :, i, j], patch)
    return out


def bn(x, s, p):
    shape = (-1,) + (1,) * (x.ndim - 1)
    mean, var = s[f"{p}.running_mean"].reshape(shape), s[f"{p}.running_var"].reshape(shape)
    gamma, beta = s[f"{p}.weight"].reshape(shape), s[f"{p}.bias"].reshape(shape)
    return (x - mean) / np.sqrt(var + EPS) * gamma + beta


def prelu(x, a):
    return np.where(x > 0, x, x * a.reshape(-1, 1, 1))


def block(x, s, p, stride, act=True):
    w = s[f"{p}.conv.weight"].astype(np.float64)
    k = w.shape[2]
    pad = 0 if k in (1, 5) else 1
    y = bn(conv2d(x, w, stride, pad, x.shape[0] // w.shape[1]), s, f"{p}.bn")
    return prelu(y, s[f"{p}.prelu.weight"]) if act else y


def depth_wise(x, s, p, stride):
    y = block(x, s, f"{p}.conv", 1)
    y = block(y, s, f"{p}.conv_dw", stride)
    y = block(y, s, f"{p}.project", 1, act=False)
    if f"{p}.se_module.fc1.weight" in s:
        q = f"{p}.se_module"
        g = y.mean(axis=(1, 2), keepdims=True)
        g = bn(conv2d(g, s[f"{q}.fc1.weight"], 1, 0, 1), s, f"{q}.bn1")
        g = np.maximum(g, 0)
        g = bn(conv2d(g, s[f"{q}.fc2.weight"], 1, 0, 1), s, f"{q}.bn2")
        y = y * (1 / (1 + np.exp(-g)))
    return y


def forward(state, image):
    """Softmax of the network ``state`` (names without ``module.``) for one 3 x 80 x 80
    float input."""
    s = state
    x = block(np.asarray(image, np.float64), s, "conv1", 2)
    x = block(x, s, "conv2_dw", 1)
    stages = (("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5"))
    for transition, residual in stages:
        x = depth_wise(x, s, transition, 2)
        i = 0
        while f"{residual}.model.{i}.conv.conv.weight" in s:
            x = x + depth_wise(x, s, f"{residual}.model.{i}", 1)
            i += 1
    x = block(x, s, "conv_6_sep", 1)
    x = block(x, s, "conv_6_dw", 1, act=False).reshape(-1)
    x = s["linear.weight"] @ x
    x = bn(x, s, "bn")
    logits = s["prob.weight"] @ x
    e = np.exp(logits - logits.max())
    return e / e.sum()
