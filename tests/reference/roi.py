"""Slow, obvious RoI pool / RoI align, written from Caffe's and torchvision's semantics.

Every scalar step is done in the input's dtype (NumPy scalars of that type) in the order the
semantics spell out, so the kernels are expected to match these results exactly. Loops run over
rois, bins and samples; the channels of one step are a NumPy vector.
"""

from __future__ import annotations

import math

import numpy as np

FLT_MAX = 3.4028234663852886e38


def _round_half_away(v: float) -> int:
    a = abs(v)
    f = math.floor(a)
    r = f + 1 if a - f >= 0.5 else f
    return int(math.copysign(r, v))


def roi_pool(x, rois, output_size, spatial_scale):
    """Returns (out, argmax) [K, C, PH, PW]; argmax is the offset y * W + x, -1 for an empty bin."""
    T = x.dtype.type
    ph_n, pw_n = output_size
    _, c, h, w = x.shape
    out = np.zeros((len(rois), c, ph_n, pw_n), x.dtype)
    argmax = np.full(out.shape, -1, np.int32)
    s = T(spatial_scale)
    for k, roi in enumerate(rois):
        b = int(roi[0])
        x1, y1, x2, y2 = (_round_half_away(float(T(v) * s)) for v in roi[1:])
        bin_h = T(max(y2 - y1 + 1, 1)) / T(ph_n)
        bin_w = T(max(x2 - x1 + 1, 1)) / T(pw_n)
        for i in range(ph_n):
            hs = min(max(math.floor(T(i) * bin_h) + y1, 0), h)
            he = min(max(math.ceil(T(i + 1) * bin_h) + y1, 0), h)
            for j in range(pw_n):
                ws = min(max(math.floor(T(j) * bin_w) + x1, 0), w)
                we = min(max(math.ceil(T(j + 1) * bin_w) + x1, 0), w)
                if he <= hs or we <= ws:
                    continue  # empty bin: 0 and argmax -1
                best = np.full(c, T(-FLT_MAX))
                where = np.full(c, -1, np.int32)
                for yy in range(hs, he):
                    for xx in range(ws, we):
                        v = x[b, :, yy, xx]
                        gt = v > best  # strict: the first maximum wins
                        best = np.where(gt, v, best)
                        where = np.where(gt, yy * w + xx, where)
                out[k, :, i, j] = best
                argmax[k, :, i, j] = where
    return out, argmax


def roi_pool_backward(grad, rois, argmax, input_shape):
    """Each output gradient goes to its argmax cell; rois in order, bins in order."""
    gi = np.zeros(input_shape, grad.dtype)
    _, c, h, w = input_shape
    for k, roi in enumerate(rois):
        b = int(roi[0])
        for ch in range(c):
            plane = gi[b, ch].reshape(-1)
            for i, a in enumerate(argmax[k, ch].reshape(-1)):
                if a >= 0:
                    plane[a] += grad[k, ch].reshape(-1)[i]
    return gi


def _align_geometry(roi, T, s, ph_n, pw_n, sampling_ratio, aligned):
    offset = T(0.5) if aligned else T(0)
    sw, sh = T(roi[1]) * s - offset, T(roi[2]) * s - offset
    rw, rh = (T(roi[3]) * s - offset) - sw, (T(roi[4]) * s - offset) - sh
    if not aligned:
        rw, rh = max(rw, T(1)), max(rh, T(1))
    bin_h, bin_w = rh / T(ph_n), rw / T(pw_n)
    gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / T(ph_n))
    gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / T(pw_n))
    return sh, sw, bin_h, bin_w, gh, gw


def _bilinear(yv, xv, h, w, T):
    """[(y, x, weight)] for the four taps, or None outside [-1, size] on either axis."""
    if not (-1 <= yv <= h and -1 <= xv <= w):
        return None
    yv, xv = max(yv, T(0)), max(xv, T(0))
    ylo, xlo = int(yv), int(xv)
    if ylo >= h - 1:
        ylo = yhi = h - 1
        yv = T(ylo)
    else:
        yhi = ylo + 1
    if xlo >= w - 1:
        xlo = xhi = w - 1
        xv = T(xlo)
    else:
        xhi = xlo + 1
    ly, lx = yv - T(ylo), xv - T(xlo)
    hy, hx = T(1) - ly, T(1) - lx
    return [(ylo, xlo, hy * hx), (ylo, xhi, hy * lx), (yhi, xlo, ly * hx), (yhi, xhi, ly * lx)]


def _samples(geometry, i, j, h, w, T):
    sh, sw, bin_h, bin_w, gh, gw = geometry
    for iy in range(gh):
        yv = (sh + T(i) * bin_h) + T(iy + 0.5) * bin_h / T(gh)
        for ix in range(gw):
            xv = (sw + T(j) * bin_w) + T(ix + 0.5) * bin_w / T(gw)
            yield _bilinear(yv, xv, h, w, T)


def roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned):
    T = x.dtype.type
    ph_n, pw_n = output_size
    _, c, h, w = x.shape
    out = np.zeros((len(rois), c, ph_n, pw_n), x.dtype)
    s = T(spatial_scale)
    for k, roi in enumerate(rois):
        b = int(roi[0])
        geo = _align_geometry(roi, T, s, ph_n, pw_n, sampling_ratio, aligned)
        count = T(max(geo[4] * geo[5], 1))
        for i in range(ph_n):
            for j in range(pw_n):
                acc = np.zeros(c, x.dtype)
                for taps in _samples(geo, i, j, h, w, T):
                    if taps is None:
                        # Outside the map: weight 0 on cell (0, 0) (NaN or inf there still shows).
                        taps = [(0, 0, T(0))] * 4
                    v = [wt * x[b, :, yy, xx] for yy, xx, wt in taps]
                    acc = acc + (((v[0] + v[1]) + v[2]) + v[3])
                out[k, :, i, j] = acc / count
    return out


def roi_align_backward(grad, rois, input_shape, spatial_scale, sampling_ratio, aligned):
    T = grad.dtype.type
    k_n, _, ph_n, pw_n = grad.shape
    _, c, h, w = input_shape
    gi = np.zeros(input_shape, grad.dtype)
    s = T(spatial_scale)
    for k, roi in enumerate(rois):
        b = int(roi[0])
        geo = _align_geometry(roi, T, s, ph_n, pw_n, sampling_ratio, aligned)
        count = T(geo[4] * geo[5])
        for i in range(ph_n):
            for j in range(pw_n):
                g = grad[k, :, i, j]
                for taps in _samples(geo, i, j, h, w, T):
                    for yy, xx, wt in taps or ():
                        gi[b, :, yy, xx] += (g * wt) / count
    return gi
