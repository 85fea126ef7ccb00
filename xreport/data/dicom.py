"""DICOM decoding through pydicom (an optional dependency): windowing from the file's tags."""
from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .pixels import MAX_PIXELS, scale_to_uint8, squeeze_grey

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

logger = logging.getLogger(__name__)


def _pydicom() -> ModuleType:
    try:
        import pydicom
    except ImportError:
        raise DataError("reading .dcm files needs pydicom: pip install 'xreport[dicom]' "
                        "(or pip install pydicom)") from None
    return pydicom


def read_dicom(path: str | Path) -> np.ndarray:
    """One DICOM image -> uint8 (H, W) (or (H, W, 3) for colour files).

    Order, as the standard has it: modality LUT (rescale slope/intercept), then the VOI
    LUT or the first window centre/width, then MONOCHROME1 inversion (so bone is bright).
    Without a window the stored range is min-max scaled.
    """
    path = Path(path)
    pydicom = _pydicom()
    check_declared_size(path)
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad files; all mean the same here
        raise DataError(f"{path}: not a readable DICOM image ({type(exc).__name__}: {exc})") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(f"{path}: multi-frame DICOM ({frames} frames) is not supported; "
                        "export one frame per file")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return _colour(ds, pixels, photometric, path)
    _check_finite_tags(ds, path)
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    out = _window(values, ds)
    if out is None:
        if "VOILUTSequence" in ds:
            values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        out = scale_to_uint8(values)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


DEFLATED = "1.2.840.10008.1.2.1.99"
# Bytes a deflated DICOM may inflate to: a 50-megapixel 16-bit RGB image and its tags.
MAX_INFLATED_BYTES = 50_000_000 * 2 * 3 + 2**20


def check_declared_size(path: Path) -> None:
    """Refuse a DICOM whose tags declare more pixels than any image we read (rows x columns
    x frames x samples), and a deflated one that inflates beyond that, before decoding."""
    import zlib

    pydicom = _pydicom()
    try:
        with open(path, "rb") as fh:
            pydicom.filereader.read_preamble(fh, True)
            meta = pydicom.filereader._read_file_meta_info(fh)  # leaves fh at the data set
            if str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
                inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                inflated = 0
                while chunk := fh.read(1 << 16):
                    inflated += len(inflater.decompress(chunk, MAX_INFLATED_BYTES))
                    while inflater.unconsumed_tail and inflated <= MAX_INFLATED_BYTES:
                        inflated += len(inflater.decompress(inflater.unconsumed_tail,
                                                            MAX_INFLATED_BYTES))
                    if inflated > MAX_INFLATED_BYTES:
                        raise DataError(f"{path}: deflated DICOM inflates to more than "
                                        f"{MAX_INFLATED_BYTES:,} bytes (possible decompression bomb)")
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except DataError:
        raise
    except Exception as exc:  # pydicom raises many types for bad files; all mean the same here
        raise DataError(f"{path}: not a readable DICOM image ({type(exc).__name__}: {exc})") from None
    try:
        rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        frames = int(header.get("NumberOfFrames", 1) or 1)
        samples = int(header.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: DICOM size tags are not numbers ({exc})") from None
    if frames > 1:
        raise DataError(f"{path}: multi-frame DICOM ({frames} frames) is not supported; "
                        "export one frame per file")
    if min(rows, cols, samples) < 1 or rows * cols * samples > MAX_PIXELS:
        raise DataError(f"{path}: DICOM declares {rows}x{cols} pixels x {samples} samples; "
                        f"the limit is {MAX_PIXELS:,} values (possible decompression bomb)")


# The tags that scale grey values: a NaN or infinite one turns every pixel into one value,
# so the image would train as a blank one.
_SCALING_TAGS = ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth")


def _check_finite_tags(ds: Dataset, path: Path) -> None:
    """Refuse a DICOM whose rescale or window tags are not finite numbers (one line)."""
    import math

    for tag in _SCALING_TAGS:
        if tag not in ds or ds[tag].value in (None, ""):
            continue
        value = ds[tag].value
        items = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        try:
            numbers = [float(v) for v in items]
        except (TypeError, ValueError):
            raise DataError(f"{path}: DICOM tag {tag} is {value!r}, not a number; fix or remove the tag") from None
        if not all(math.isfinite(x) for x in numbers):
            raise DataError(f"{path}: DICOM tag {tag} is {', '.join(map(str, numbers))}, not a finite "
                            "number: the image would decode to one grey value; fix or remove the tag")
    if "RescaleSlope" in ds and ds.RescaleSlope not in (None, "") and float(ds.RescaleSlope) == 0:
        raise DataError(f"{path}: DICOM tag RescaleSlope is 0: the image would decode to one grey value; "
                        "fix or remove the tag")


def _first(value: object) -> float:
    try:
        return float(value[0])  # type: ignore[index]   # a multi-valued element: its first
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def _window(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Linear window (DICOM PS3.3 C.11.2.1.2) to 0..255, or None when the file has none."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    if width < 1:
        return None
    scaled = ((values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _colour(ds: Dataset, pixels: np.ndarray, photometric: str, path: Path) -> np.ndarray:
    if photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space
        pixels = convert_color_space(pixels, photometric, "RGB")
    elif photometric != "RGB":
        raise DataError(f"{path}: photometric interpretation {photometric} is not supported "
                        "(MONOCHROME1, MONOCHROME2, RGB, YBR_*)")
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise DataError(f"{path}: colour DICOM with pixel shape {pixels.shape} is not supported")
    arr = pixels if pixels.dtype == np.uint8 else scale_to_uint8(pixels)
    return squeeze_grey(arr)
