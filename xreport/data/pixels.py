"""Pixel arithmetic both image decoders share (PIL's in images.py, pydicom's in dicom.py):
uint8 scaling, grey squeezing and the decompression-bomb bound. It imports neither decoder,
so images.py reaches dicom.py without an import circle."""
from __future__ import annotations

import numpy as np

# A decompression bomb is refused before its pixels are decoded (50 megapixels is well
# above any radiograph and far below what exhausts memory).
MAX_PIXELS = 50_000_000


def round_u8(arr: np.ndarray) -> np.ndarray:
    """Round and clip to uint8."""
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric array to uint8 (a flat image becomes all zeros)."""
    arr = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(arr)
    if arr.size == 0 or not finite.any():
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    arr = np.where(finite, arr, lo)
    return round_u8((arr - lo) * (255.0 / (hi - lo)))


def squeeze_grey(arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) with three equal channels -> (H, W); colour stays (H, W, 3)."""
    if arr.ndim == 3 and arr.shape[2] == 3:
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            return np.ascontiguousarray(arr[..., 0])
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.ascontiguousarray(arr[..., 0])
    return np.ascontiguousarray(arr)
