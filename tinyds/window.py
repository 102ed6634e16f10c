"""Sliding-window plumbing shared by the float and integer references.

Pools and the float reference sum over kernel taps: for each tap (i, j) one strided
view of the padded input lines up with every output pixel, KH*KW vectorised steps
instead of per-pixel Python loops. The integer convolutions take every window at once
(`windows`) for one matmul or einsum: verify runs the reference on 2000 vectors.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def output_size(size: int, kernel: int, stride: int, dilation: int, pad_lo: int, pad_hi: int) -> int:
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def pad_nhwc(x: np.ndarray, padding, value=0) -> np.ndarray:
    """padding = (top, left, bottom, right)."""
    top, left, bottom, right = padding
    if not any(padding):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def taps(x: np.ndarray, kernel, stride, dilation, padding, pad_value=0):
    """Yield (i, j, view) for every kernel tap; view is (N, OH, OW, C)."""
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    oh = output_size(x.shape[1], kh, sh, dh, padding[0], padding[2])
    ow = output_size(x.shape[2], kw, sw, dw, padding[1], padding[3])
    xp = pad_nhwc(x, padding, pad_value)
    for i in range(kh):
        for j in range(kw):
            r, c = i * dh, j * dw
            yield i, j, xp[:, r:r + (oh - 1) * sh + 1:sh, c:c + (ow - 1) * sw + 1:sw, :]


def in_bounds_count(shape_hw, kernel, stride, padding) -> np.ndarray:
    """(OH, OW, 1) number of taps of each pooling window that fall inside the input."""
    ones = np.ones((1, *shape_hw, 1), dtype=np.int64)
    count = None
    for _, _, v in taps(ones, kernel, stride, (1, 1), padding, 0):
        count = v if count is None else count + v
    return count[0]


def windows(x: np.ndarray, kernel, stride, dilation, padding, pad_value=0) -> np.ndarray:
    """Every output pixel's window at once: a (N, OH, OW, C, KH, KW) view of the padded
    input (no copy), for one einsum or matmul over all taps (im2col)."""
    kh, kw = kernel
    (sh, sw), (dh, dw) = stride, dilation
    oh = output_size(x.shape[1], kh, sh, dh, padding[0], padding[2])
    ow = output_size(x.shape[2], kw, sw, dw, padding[1], padding[3])
    xp = pad_nhwc(x, padding, pad_value)
    v = sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    return v[:, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw, :, ::dh, ::dw]
