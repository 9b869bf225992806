"""Transposed convolution as the literal scatter: every input pixel adds weight * value to the
output pixels its kernel taps land on. Slow and obvious, float64 throughout."""

import numpy as np


def conv_transpose2d(
    x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    oph, opw = _pair(output_padding)
    dh, dw = _pair(dilation)
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    n, c_in, h, w = x.shape
    _, c_out_g, kh, kw = weight.shape
    c_in_g = c_in // groups
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    ow = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    # Scatter into an output grown by the padding on every side, then cut the padding off.
    full = np.zeros((n, groups * c_out_g, oh + 2 * ph + kh * dh, ow + 2 * pw + kw * dw))
    for ci in range(c_in):
        g = ci // c_in_g
        for co_g in range(c_out_g):
            co = g * c_out_g + co_g
            for i in range(kh):
                for j in range(kw):
                    rows = slice(i * dh, i * dh + (h - 1) * sh + 1, sh)
                    cols = slice(j * dw, j * dw + (w - 1) * sw + 1, sw)
                    full[:, co, rows, cols] += x[:, ci] * weight[ci, co_g, i, j]
    out = full[:, :, ph : ph + oh, pw : pw + ow]
    if bias is not None:
        out = out + np.asarray(bias, np.float64)[None, :, None, None]
    return out


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)
