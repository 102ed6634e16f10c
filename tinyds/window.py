"""Sliding-window plumbing shared by the float and integer references.

Convolutions and pools are computed as a sum over kernel taps: for each tap
(i, j) we take one strided view of the padded input that lines up with every
output pixel. KH*KW vectorised steps instead of per-pixel Python loops keeps
1000-vector reference runs fast.
"""
from __future__ import annotations

import numpy as np


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
