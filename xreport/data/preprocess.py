"""Deterministic preprocessing at load time, and normalisation at batch time.

The per-image pipeline runs in this order: black-border crop, histogram equalisation,
CLAHE, unsharp mask, resize (keep-aspect with centred black padding, or plain), grey ->
3 channels. Every resize goes through one torch function (bilinear, antialiased when
shrinking), so the vectorised path for array data sets and the per-image path give the
same pixels. Masks follow the crop, the resize and the padding.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from ..config import PreprocessConfig
from ..errors import ConfigError, DataError
from .base import Split

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BORDER_THRESHOLD = 16          # grey level (0..255) above which a pixel counts as content
BORDER_MIN_FRACTION = 0.02     # a row/column is content when this share of it is above the threshold
CLAHE_CLIP = 2.0
UNSHARP_PERCENT = 100
_CHUNK_ELEMENTS = 1 << 24      # floats per interpolate call, to bound memory on big sets


def has_per_image_steps(cfg: PreprocessConfig) -> bool:
    """True when a step depends on each image's content (so no vectorised fast path)."""
    return cfg.crop_black_border or cfg.equalize or cfg.clahe or cfg.unsharp


# ---------------------------------------------------------------- geometry
def border_box(img: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the content inside a black border; the whole image
    when nothing or almost nothing would remain."""
    grey = img if img.ndim == 2 else img.mean(axis=2)
    content = grey > BORDER_THRESHOLD
    rows = np.flatnonzero(content.mean(axis=1) > BORDER_MIN_FRACTION)
    cols = np.flatnonzero(content.mean(axis=0) > BORDER_MIN_FRACTION)
    h, w = grey.shape
    if rows.size == 0 or cols.size == 0:
        return 0, h, 0, w
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if (bottom - top) * (right - left) < 0.1 * h * w:
        return 0, h, 0, w
    return top, bottom, left, right


def target_geometry(height: int, width: int, image_size: int, *,
                    keep_aspect: bool) -> tuple[int, int, int, int]:
    """(resized_h, resized_w, pad_top, pad_left) to fit (height, width) into a square."""
    if not keep_aspect or height == width:
        return image_size, image_size, 0, 0
    scale = image_size / max(height, width)
    new_h = min(image_size, max(1, round(height * scale)))
    new_w = min(image_size, max(1, round(width * scale)))
    return new_h, new_w, (image_size - new_h) // 2, (image_size - new_w) // 2


def resize_stack(x: torch.Tensor, image_size: int, *, keep_aspect: bool) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, S, S): bilinear (antialiased when shrinking),
    padded with black when keeping the aspect ratio. Works in chunks."""
    n, c, h, w = x.shape
    new_h, new_w, top, left = target_geometry(h, w, image_size, keep_aspect=keep_aspect)
    out = torch.zeros((n, c, image_size, image_size), dtype=torch.uint8)
    if n == 0:
        return out
    if (new_h, new_w) == (h, w):
        out[:, :, top:top + h, left:left + w] = x
        return out
    step = max(1, _CHUNK_ELEMENTS // (c * max(h * w, new_h * new_w)))
    for start in range(0, n, step):
        part = x[start:start + step].float()
        resized = F.interpolate(part, size=(new_h, new_w), mode="bilinear", align_corners=False,
                                antialias=new_h < h or new_w < w)
        out[start:start + step, :, top:top + new_h, left:left + new_w] = \
            resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def resize_masks(masks: torch.Tensor, image_size: int, *, keep_aspect: bool) -> torch.Tensor:
    """bool (N, H, W) -> bool (N, S, S) with the same geometry as ``resize_stack``."""
    as_u8 = masks.to(torch.uint8).mul_(255).unsqueeze(1)
    return resize_stack(as_u8, image_size, keep_aspect=keep_aspect)[:, 0] >= 128


# ---------------------------------------------------------------- intensity steps
def equalize(img: np.ndarray) -> np.ndarray:
    """Histogram equalisation of the grey levels (of the luminance for colour images)."""
    return _on_luma(img, _equalize_grey)


def _equalize_grey(grey: np.ndarray) -> np.ndarray:
    hist = np.bincount(grey.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    nonzero = cdf[cdf > 0]
    first, total = int(nonzero[0]), int(cdf[-1])
    if total == first:          # a flat image stays as it is
        return grey.copy()
    lut = np.clip(np.rint((cdf - first) * 255.0 / (total - first)), 0, 255).astype(np.uint8)
    return lut[grey]


def clahe(img: np.ndarray) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (OpenCV), tiles of >= 8 pixels."""
    try:
        import cv2
    except ImportError:
        raise DataError("preprocess.clahe needs OpenCV: pip install opencv-python-headless") from None

    def run(grey: np.ndarray) -> np.ndarray:
        tiles = int(max(1, min(8, min(grey.shape) // 8)))
        return cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(tiles, tiles)).apply(grey)

    return _on_luma(img, run)


def unsharp(img: np.ndarray) -> np.ndarray:
    """Unsharp mask with a radius that grows with the image (1 px per 128 px of side)."""
    radius = max(1.0, min(img.shape[:2]) / 128.0)
    sharp = Image.fromarray(img).filter(ImageFilter.UnsharpMask(radius=radius, percent=UNSHARP_PERCENT,
                                                                threshold=0))
    return np.asarray(sharp, dtype=np.uint8)


def _on_luma(img: np.ndarray, fn) -> np.ndarray:  # noqa: ANN001 - a grey -> grey callable
    if img.ndim == 2:
        return fn(np.ascontiguousarray(img))
    ycc = np.array(Image.fromarray(img).convert("YCbCr"))
    ycc[..., 0] = fn(np.ascontiguousarray(ycc[..., 0]))
    return np.asarray(Image.fromarray(ycc, mode="YCbCr").convert("RGB"), dtype=np.uint8)


# ---------------------------------------------------------------- the pipeline
def _as_hwc(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise DataError(f"preprocess_image expects uint8 pixels, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or min(img.shape[:2]) < 1:
        raise DataError(f"preprocess_image expects (H, W) or (H, W, 3), got shape {img.shape}")
    return img


def preprocess_image_and_mask(img: np.ndarray, mask: np.ndarray | None, cfg: PreprocessConfig,
                              image_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``preprocess_image`` that also carries a bool (H, W) mask through the geometry."""
    img = _as_hwc(img)
    if cfg.crop_black_border:
        top, bottom, left, right = border_box(img)
        img = img[top:bottom, left:right]
        mask = None if mask is None else mask[top:bottom, left:right]
    if cfg.equalize:
        img = equalize(img)
    if cfg.clahe:
        img = clahe(img)
    if cfg.unsharp:
        img = unsharp(img)
    hwc = img if img.ndim == 3 else img[..., None]
    chw = torch.from_numpy(np.require(hwc, requirements=["C", "W"])).permute(2, 0, 1)
    out = resize_stack(chw[None], image_size, keep_aspect=cfg.keep_aspect)[0]
    if cfg.to_rgb and out.shape[0] == 1:
        out = out.expand(3, -1, -1)
    result = out.permute(1, 2, 0).numpy()
    result = np.ascontiguousarray(result[..., 0] if result.shape[2] == 1 else result)
    if mask is not None:
        mask = resize_masks(torch.from_numpy(np.ascontiguousarray(mask, dtype=bool))[None],
                            image_size, keep_aspect=cfg.keep_aspect)[0].numpy()
    return result, mask


def preprocess_image(img: np.ndarray, cfg: PreprocessConfig, image_size: int) -> np.ndarray:
    """The deterministic pipeline for one raw uint8 image (H, W) or (H, W, 3).

    Returns uint8 (S, S) for grey or (S, S, 3) for colour / ``to_rgb``.
    """
    return preprocess_image_and_mask(img, None, cfg, image_size)[0]


def preprocess_stack(images: torch.Tensor | np.ndarray, cfg: PreprocessConfig, image_size: int, *,
                     masks: torch.Tensor | np.ndarray | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 (N, C, H, W) of one size -> uint8 (N, C', S, S) (+ masks bool (N, S, S)).

    Vectorised (one interpolate per chunk) unless a per-image step is on.
    """
    x = torch.as_tensor(images)
    m = None if masks is None else torch.as_tensor(masks).bool()
    if x.ndim != 4 or x.dtype != torch.uint8 or x.shape[1] not in (1, 3):
        raise DataError(f"expected uint8 images (N, 1|3, H, W), got {tuple(x.shape)} {x.dtype}")
    if has_per_image_steps(cfg):
        out_imgs: list[torch.Tensor] = []
        out_masks: list[torch.Tensor] = []   # one per image when masks are given
        for i in range(x.shape[0]):
            img = x[i].permute(1, 2, 0).numpy()
            mask = None if m is None else m[i].numpy()
            pi, pm = preprocess_image_and_mask(img, mask, cfg, image_size)
            out_imgs.append(torch.from_numpy(pi if pi.ndim == 3 else pi[..., None]).permute(2, 0, 1))
            if pm is not None:
                out_masks.append(torch.from_numpy(pm))
        c = 3 if (cfg.to_rgb or x.shape[1] == 3) else 1
        out = torch.stack(out_imgs) if out_imgs else torch.zeros((0, c, image_size, image_size), dtype=torch.uint8)
        new_masks = None if m is None else (torch.stack(out_masks) if out_masks
                                            else torch.zeros((0, image_size, image_size), dtype=torch.bool))
    else:
        out = resize_stack(x, image_size, keep_aspect=cfg.keep_aspect)
        new_masks = None if m is None else resize_masks(m, image_size, keep_aspect=cfg.keep_aspect)
    if cfg.to_rgb and out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1).contiguous()
    return out.contiguous(), new_masks


def describe_pipeline(cfg: PreprocessConfig, image_size: int) -> list[dict]:
    """The preprocessing steps, in order, with their parameters (for the report and meta)."""
    steps: list[dict] = [{"step": "decode", "params": {"dtype": "uint8", "high_bit_depth": "min-max scaled"}}]
    if cfg.crop_black_border:
        steps.append({"step": "crop_black_border",
                      "params": {"threshold": BORDER_THRESHOLD, "min_fraction": BORDER_MIN_FRACTION}})
    if cfg.equalize:
        steps.append({"step": "equalize", "params": {"on": "luminance"}})
    if cfg.clahe:
        steps.append({"step": "clahe", "params": {"clip_limit": CLAHE_CLIP, "tile_grid": 8,
                                                  "min_tile_px": 8}})
    if cfg.unsharp:
        steps.append({"step": "unsharp", "params": {"radius_px_per_128": 1.0, "percent": UNSHARP_PERCENT}})
    steps.append({"step": "resize", "params": {"size": image_size, "keep_aspect": cfg.keep_aspect,
                                               "pad": "black, centred" if cfg.keep_aspect else None,
                                               "interpolation": "bilinear (antialiased when shrinking)"}})
    if cfg.to_rgb:
        steps.append({"step": "to_rgb", "params": {"channels": 3}})
    norm: dict = {"mode": cfg.normalize}
    if cfg.normalize == "fixed":
        norm.update(mean=list(cfg.mean), std=list(cfg.std))
    steps.append({"step": "normalize", "params": norm})
    return steps


# ---------------------------------------------------------------- normalisation
def compute_mean_std(split: Split) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the [0, 1] scale over every pixel of the split."""
    x = split.images
    if x.shape[0] == 0:
        raise DataError(f"split {split.name!r} is empty: cannot compute the normalisation")
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    step = max(1, _CHUNK_ELEMENTS // max(1, x[0].numel()))
    for start in range(0, x.shape[0], step):
        part = x[start:start + step].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def resolve_normalization(preprocess_cfg: PreprocessConfig, train_split: Split | None, *,
                          channels: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel for ``preprocess.normalize`` = dataset | imagenet | fixed.

    ``channels`` defaults to the train split's; ImageNet values are averaged for 1 channel
    and a single fixed value is repeated for 3.
    """
    if channels is None:
        if train_split is None:
            raise DataError("resolve_normalization needs the train split or channels=")
        channels = int(train_split.images.shape[1])
    mode = preprocess_cfg.normalize
    if mode == "dataset":
        if train_split is None:
            raise DataError("normalize = 'dataset' needs the train split to compute mean/std")
        mean, std = compute_mean_std(train_split)
    elif mode == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if channels == 1:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    elif mode == "fixed":
        mean, std = tuple(preprocess_cfg.mean), tuple(preprocess_cfg.std)
        if len(mean) == 1 and channels == 3:
            mean, std = mean * 3, std * 3
        if len(mean) != channels or len(std) != channels:
            raise ConfigError(f"preprocess.mean/std have {len(mean)} values for {channels}-channel "
                              "images; give 1 or one per channel")
    else:
        raise ConfigError(f"preprocess.normalize {mode!r} is not one of dataset, imagenet, fixed")
    # A constant channel has std 0; dividing by it would give inf.
    std = tuple(s if s > 1e-6 else 1.0 for s in std)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def normalize_batch(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) (or float already on [0, 1]) -> float32 (x - mean) / std, same device."""
    xf = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    m = torch.as_tensor(tuple(mean), dtype=xf.dtype, device=xf.device).view(1, -1, 1, 1)
    s = torch.as_tensor(tuple(std), dtype=xf.dtype, device=xf.device).view(1, -1, 1, 1)
    if m.shape[1] != xf.shape[1] or s.shape[1] != xf.shape[1]:
        raise DataError(f"normalisation has {m.shape[1]} means for {xf.shape[1]}-channel images")
    return (xf - m) / s
