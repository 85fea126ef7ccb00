"""Safe decoding of one image file into a uint8 array (H, W) or (H, W, 3).

Every failure is a ``DataError`` naming the file, so an adapter can either stop or skip
the file and record why (``data.skip_bad_images``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ..config import PreprocessConfig
from ..errors import DataError
from .dicom import read_dicom
from .pixels import MAX_PIXELS, round_u8, scale_to_uint8, squeeze_grey

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


def read_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a PNG/JPEG (through PIL) or DICOM (through pydicom) file to uint8.

    Returns (H, W) for grey images (including RGB files whose three channels are equal)
    and (H, W, 3) for colour. 16-bit and float images are min-max scaled to 0..255;
    CMYK, palette and alpha images are converted (alpha composited over black).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, not an image file")
    if path.suffix.lower() == ".dcm":
        return read_dicom(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc.strerror or exc})") from None
    if size == 0:
        raise DataError(f"{path}: empty file, not an image")
    try:
        with warnings.catch_warnings():
            # PIL only warns below twice its own limit; a warning here must stop the load.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _strict_decoding(), Image.open(path) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise DataError(f"{path}: {width}x{height} pixels exceeds the limit of "
                                    f"{max_pixels} (possible decompression bomb)")
                im.load()
                return _to_uint8(ImageOps.exif_transpose(im))
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        if _has_image_signature(path):
            raise DataError(f"{path}: corrupt or truncated image (its header is damaged)") from None
        raise DataError(f"{path}: not a recognised image file (expected PNG or JPEG)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc})") from None


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Refuse truncated files even when another library (WeasyPrint does, on import) has
    switched PIL's process-wide ``LOAD_TRUNCATED_IMAGES`` on."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")


def _has_image_signature(path: Path) -> bool:
    """A PNG or JPEG magic number: the file is an image that PIL could not parse."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return any(head.startswith(sig) for sig in _SIGNATURES)


def _to_uint8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return scale_to_uint8(np.asarray(im))
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    if im.mode == "LA":
        arr = np.asarray(im, dtype=np.float32)
        return round_u8(arr[..., 0] * (arr[..., 1] / 255.0))
    if im.mode == "RGBA":
        arr = np.asarray(im, dtype=np.float32)
        return squeeze_grey(round_u8(arr[..., :3] * (arr[..., 3:4] / 255.0)))
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    arr = np.asarray(im, dtype=np.uint8)
    return squeeze_grey(arr) if arr.ndim == 3 else arr.copy()


# ---------------------------------------------------------------- modality from the pixels
# Web-collected grey scans are often saved as RGB files whose channels differ only by JPEG
# chroma noise. A file is grey content when its channels differ by at most GREY_MEAN_DIFF
# grey levels on average and at most GREY_OUTLIER_SHARE of its pixels differ by more than
# GREY_OUTLIER_DIFF (stain, fundus and skin photographs differ by tens of levels on average).
GREY_MEAN_DIFF = 2.0
GREY_OUTLIER_DIFF = 24
GREY_OUTLIER_SHARE = 0.01
MODALITY_SAMPLE = 64       # files decoded to decide a data set's modality


def is_grey_content(arr: np.ndarray) -> bool:
    """True for (H, W) and for (H, W, 3) whose channels are equal within the tolerances."""
    if arr.ndim == 2:
        return True
    a = arr.astype(np.int16)
    diff = np.maximum(np.abs(a[..., 0] - a[..., 1]), np.abs(a[..., 0] - a[..., 2]))
    return (float(diff.mean()) <= GREY_MEAN_DIFF
            and float((diff > GREY_OUTLIER_DIFF).mean()) <= GREY_OUTLIER_SHARE)


def to_grey(arr: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) by the channel mean (the channels are near equal when this is used)."""
    if arr.ndim == 2:
        return arr
    return round_u8(arr.astype(np.float32).mean(axis=2))


@dataclass(frozen=True)
class Modality:
    """A data set's modality decided from the content of a sample of its files."""

    colour: bool          # the majority of the sampled files has distinct colour channels
    sampled: int          # files decoded
    stored_rgb: int       # of those, stored as colour files (RGB, palette, CMYK...)
    grey_content: int     # of those, grey content (stored grey, or RGB with equal channels)

    def describe(self) -> str:
        kind = "colour" if self.colour else "grey"
        return (f"{self.grey_content} of {self.sampled} sampled files are grey content "
                f"({self.stored_rgb} stored as colour files): {kind}, {3 if self.colour else 1} "
                f"channel{'s' if self.colour else ''}")


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def probe_modality(files: list[Path], *, sample: int = MODALITY_SAMPLE) -> Modality:
    """Decode up to ``sample`` files spread over ``files`` and decide by majority content.

    Unreadable files are left out (the loader stops on them or skips them); with none
    readable, the data set counts as grey (its loader then names the bad files)."""
    if not files:
        return Modality(False, 0, 0, 0)
    picks = sorted(set(np.linspace(0, len(files) - 1, num=min(sample, len(files))).round()
                       .astype(int).tolist()))
    # Kept beside the decode cache (keyed by the sampled files' content), so a cached load
    # decodes nothing at all.
    cache_dir = decode_cache_dir() if len(files) >= CACHE_MIN_FILES else None
    cached = cache_dir / f"modality-{_modality_key([files[i] for i in picks])}.json" if cache_dir else None
    if cached is not None and cached.is_file():
        from ..artifacts import read_json_file
        from ..errors import XReportError

        try:
            entry = _modality_entry(read_json_file(cached, error=DataError), sample)
            if entry is not None:
                return entry
        except XReportError:
            pass   # a damaged or tampered entry is only a miss: the sample is decoded again
    modality = _probe_modality([files[i] for i in picks])
    if cached is not None:
        from ..runs import write_json
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_json(cached, asdict(modality))
        except Exception as exc:  # noqa: BLE001 - a read-only cache is not a reason to stop
            logger.warning("could not write the modality cache %s (%s)", cached, exc)
    return modality


def _modality_entry(entry: object, sample: int) -> Modality | None:
    """A cached modality as written by ``probe_modality``, or None (a miss) when it is not."""
    if not isinstance(entry, dict) or set(entry) != {"colour", "sampled", "stored_rgb", "grey_content"}:
        return None
    counts = [c for c in (entry["sampled"], entry["stored_rgb"], entry["grey_content"])
              if isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= sample]
    if not isinstance(entry["colour"], bool) or len(counts) != 3:
        return None
    return Modality(entry["colour"], counts[0], counts[1], counts[2])


def _with_files(digest: "hashlib._Hash", files: list[Path]) -> str:
    """``digest`` extended by each file's name and content hash (an unreadable file by its
    name): a cache key that changes when any file does."""
    from ..runs import sha256_file

    for path in files:
        try:
            digest.update(f"{path.name}\0{sha256_file(path)}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            digest.update(f"{path.name}\0unreadable\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _modality_key(files: list[Path]) -> str:
    digest = hashlib.sha256(json.dumps([GREY_MEAN_DIFF, GREY_OUTLIER_DIFF, GREY_OUTLIER_SHARE]).encode())
    return _with_files(digest, files)


def _probe_modality(picked: list[Path]) -> Modality:
    sampled = stored_rgb = grey = 0
    for path in picked:
        try:
            arr = read_image(path)
        except DataError:
            continue
        sampled += 1
        grey += is_grey_content(arr)
        if path.suffix.lower() != ".dcm":
            try:
                with Image.open(path) as im:
                    stored_rgb += im.mode not in _GREY_MODES
            except (OSError, ValueError):
                pass
        else:
            stored_rgb += arr.ndim == 3
    return Modality(colour=sampled > 0 and grey * 2 < sampled, sampled=sampled,
                    stored_rgb=stored_rgb, grey_content=grey)


@dataclass
class DecodedFiles:
    """Files of one split, decoded and preprocessed one at a time."""

    images: torch.Tensor                     # uint8 (N, C, S, S); C = 3 if any file is colour
    kept: list[int]                          # indices (into the given file list) that loaded
    skipped: list[dict[str, str]]            # {"file", "reason"} for the files left out
    original_sizes: set[tuple[int, int]]
    original_channels: set[int]


# ---------------------------------------------------------------- decoded-image cache
# A split's decoded, preprocessed uint8 tensor is kept on disk so that a second run (another
# seed, evaluate, build) on the same files skips JPEG decoding. The key covers every file's
# content (sha256), the preprocessing options and the input size, so any change misses.
CACHE_ENV = "XREPORT_DECODE_CACHE"      # a folder, or "off"
CACHE_MIN_FILES = 64                    # smaller splits decode in well under a second
# 2: entries carry their count, shape and sha256; 3: the modality (colour) is part of the key
CACHE_VERSION = 3


def decode_cache_dir() -> Path | None:
    """``$XREPORT_DECODE_CACHE``, else ``~/.cache/xreport/decoded``; None when "off"."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting.lower() == "off":
        return None
    if setting:
        return Path(setting).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xreport" / "decoded"


def decode_cache_key(files: list[Path], *, preprocess_cfg: PreprocessConfig, image_size: int,
                     skip_bad: bool, colour: bool | None = None) -> str:
    digest = hashlib.sha256(json.dumps(
        {"v": CACHE_VERSION, "preprocess": asdict(preprocess_cfg), "size": image_size,
         "skip_bad": skip_bad, "colour": colour}, sort_keys=True, default=list).encode())
    return _with_files(digest, files)


def _images_digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest()


def _cache_read(path: Path, *, n_files: int, image_size: int, skip_bad: bool,
                colour: bool | None) -> DecodedFiles | None:
    """A cache entry, trusted only when it matches its own index (count, shape, dtype, the
    sha256 of its pixels) and the files it claims to hold; anything else is a miss (decoded
    again and rewritten), never data to train on."""
    from ..runs import load_tensor_file

    try:
        blob = load_tensor_file(path, what="decode cache entry")   # bounded before it is read
        if not isinstance(blob, dict):
            raise ValueError(f"a {type(blob).__name__}, not a cache entry")
        images, kept = blob["images"], [int(i) for i in blob["kept"]]
        skipped = [dict(s) for s in blob["skipped"]]
        channels = {int(c) for c in blob["channels"]}   # as stored in the files
        # A grey set (colour False) turns colour-stored files grey: one channel whatever they held.
        tensor_channels = 1 if colour is False else (3 if 3 in channels else 1)
        problem = (
            "not a uint8 image tensor" if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8
                                               and images.dim() == 4) else
            f"shape {tuple(images.shape)} is not (N, C, {image_size}, {image_size})"
            if tuple(images.shape[2:]) != (image_size, image_size) or images.shape[1] not in (1, 3) else
            f"{len(images)} images for {len(kept)} kept files" if len(images) != len(kept) or
            int(blob["n"]) != len(kept) else
            "kept files out of order or range" if kept != sorted(set(kept))
            or (kept and not (0 <= kept[0] and kept[-1] < n_files)) else
            f"{len(kept)} + {len(skipped)} files for {n_files}" if len(kept) + len(skipped) != n_files
            or (skipped and not skip_bad) else
            "channels do not match the tensor" if tensor_channels != images.shape[1] else
            "its pixels do not match their sha256" if blob["sha256"] != _images_digest(images) else "")
        if problem:
            raise ValueError(problem)
        return DecodedFiles(images.clone(), kept, skipped, {tuple(s) for s in blob["sizes"]}, channels)
    except Exception as exc:  # a damaged or altered cache file is only a cache miss
        logger.warning("%s: unusable decode cache (%s); decoding again", path,
                       " ".join(str(exc).split())[:200] or type(exc).__name__)
        return None


def _cache_write(path: Path, decoded: DecodedFiles) -> None:
    from ..runs import atomic_path

    try:
        with atomic_path(path) as tmp:
            torch.save({"images": decoded.images, "kept": decoded.kept, "skipped": decoded.skipped,
                        "sizes": sorted(decoded.original_sizes),
                        "channels": sorted(decoded.original_channels),
                        "n": len(decoded.kept), "sha256": _images_digest(decoded.images)}, tmp)
    except OSError as exc:  # a read-only home is not a reason to stop training
        logger.warning("could not write the decode cache %s (%s)", path, exc)


def decode_files(files: list[Path], *, root: Path, preprocess_cfg: PreprocessConfig, image_size: int,
                 skip_bad: bool, desc: str = "images", colour: bool | None = None) -> DecodedFiles:
    """Decode + preprocess each file once: from the decode cache when the same files were
    decoded with the same options before, else file by file (so full-size originals are
    never all in memory) and then cached.

    ``colour`` False (a grey data set, ``probe_modality``) turns colour files grey; None
    keeps each file as it is. A bad file raises ``DataError``, or with ``skip_bad`` is
    recorded and left out.
    """
    cache_dir = decode_cache_dir() if len(files) >= CACHE_MIN_FILES else None
    if cache_dir is None:
        return _decode(files, root=root, preprocess_cfg=preprocess_cfg, image_size=image_size,
                       skip_bad=skip_bad, desc=desc, colour=colour)
    key = decode_cache_key(files, preprocess_cfg=preprocess_cfg, image_size=image_size,
                           skip_bad=skip_bad, colour=colour)
    path = cache_dir / f"{key}.pt"
    if path.is_file() and (cached := _cache_read(path, n_files=len(files), image_size=image_size,
                                                 skip_bad=skip_bad, colour=colour)) is not None:
        logger.info("%s: %d images from the decode cache %s", desc, len(cached.kept), path)
        return cached
    decoded = _decode(files, root=root, preprocess_cfg=preprocess_cfg, image_size=image_size,
                      skip_bad=skip_bad, desc=desc, colour=colour)
    _cache_write(path, decoded)
    return decoded


def _decode(files: list[Path], *, root: Path, preprocess_cfg: PreprocessConfig, image_size: int,
            skip_bad: bool, desc: str, colour: bool | None = None) -> DecodedFiles:
    from .preprocess import preprocess_image

    arrays: list[np.ndarray] = []
    kept: list[int] = []
    skipped: list[dict[str, str]] = []
    sizes: set[tuple[int, int]] = set()
    channels: set[int] = set()
    bar = tqdm(files, desc=desc, unit="img", leave=False, disable=None if len(files) > 200 else True)
    for i, path in enumerate(bar):
        try:
            raw = read_image(path)
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append({"file": _relative(path, root), "reason": str(exc)})
            logger.warning("skipped %s", exc)
            continue
        sizes.add((int(raw.shape[0]), int(raw.shape[1])))
        channels.add(1 if raw.ndim == 2 else 3)
        if colour is False:
            raw = to_grey(raw)
        arrays.append(preprocess_image(raw, preprocess_cfg, image_size))
        kept.append(i)
    colour = any(a.ndim == 3 for a in arrays)
    stacked = np.empty((len(arrays), 3 if colour else 1, image_size, image_size), dtype=np.uint8)
    for j, a in enumerate(arrays):
        stacked[j] = np.moveaxis(a, 2, 0) if a.ndim == 3 else a[None]
    return DecodedFiles(torch.from_numpy(stacked), kept, skipped, sizes, channels)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)
