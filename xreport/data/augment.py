"""Batched augmentation on tensors (CPU or CUDA): no PIL round trip, one grid_sample."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import AugmentConfig
from ..errors import DataError

_N_PARAMS = 9   # draws per image, always taken so the stream does not depend on the config


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Draw on the generator's device (a CPU generator may drive CUDA batches), then move."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _normal(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, *, generator: torch.Generator) -> torch.Tensor:
    """Random flips, rotation/translation/scale, brightness/contrast, 3x3 blur and noise.

    ``x`` is float (B, C, H, W) on [0, 1]; the result has the same shape, dtype and device
    and stays on [0, 1]. All randomness comes from ``generator``, so a seeded generator
    gives the same batch on every run.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise DataError(f"augment_batch expects float (B, C, H, W) on [0, 1], got {tuple(x.shape)} {x.dtype}")
    b = x.shape[0]
    if b == 0:
        return x
    u = _uniform((b, _N_PARAMS), generator, x.device).to(x.dtype)
    sym = u * 2 - 1                                   # uniform on [-1, 1]
    hflip = u[:, 0] < cfg.hflip
    vflip = u[:, 1] < cfg.vflip
    out = _geometric(x, cfg, hflip=hflip, vflip=vflip, angle=sym[:, 2] * math.radians(cfg.rotation),
                     shift=sym[:, 3:5] * (2 * cfg.translate), zoom=1 + sym[:, 5] * cfg.scale)
    if cfg.contrast > 0:
        factor = (1 + sym[:, 6] * cfg.contrast).view(b, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * factor + mean
    if cfg.brightness > 0:
        offset = sym[:, 8] * cfg.brightness
        out = out + offset.view(b, 1, 1, 1)
    if cfg.blur > 0:
        blur = (u[:, 7] < cfg.blur).view(b, 1, 1, 1)
        out = torch.where(blur, _blur3(out), out)
    if cfg.noise > 0:
        out = out + _normal(tuple(out.shape), generator, x.device).to(out.dtype) * cfg.noise
    return out.clamp(0.0, 1.0)


def _geometric(x: torch.Tensor, cfg: AugmentConfig, *, hflip: torch.Tensor, vflip: torch.Tensor,
               angle: torch.Tensor, shift: torch.Tensor, zoom: torch.Tensor) -> torch.Tensor:
    if cfg.rotation == 0 and cfg.translate == 0 and cfg.scale == 0:
        # Flips alone are exact index operations.
        out = torch.where(hflip.view(-1, 1, 1, 1), x.flip(3), x)
        return torch.where(vflip.view(-1, 1, 1, 1), out.flip(2), out)
    b = x.shape[0]
    fx = 1 - 2 * hflip.to(x.dtype)
    fy = 1 - 2 * vflip.to(x.dtype)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * fx, -sin * fy, shift[:, 0]], dim=1),
                         torch.stack([sin * fx, cos * fy, shift[:, 1]], dim=1)], dim=1)
    grid = F.affine_grid(theta, [b, *x.shape[1:]], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _blur3(x: torch.Tensor) -> torch.Tensor:
    k1 = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (k1[:, None] * k1[None, :] / 16.0).expand(x.shape[1], 1, 3, 3)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel, groups=x.shape[1])
