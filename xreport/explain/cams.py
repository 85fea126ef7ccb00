"""Batched CAMs: the two dispatches of the registered methods (``methods.py``).

``compute_cams``: one map per image for its target class, at the input's size in [0, 1].
``viewer_maps``: a map of every class per image at the target layer's grid, for the
interactive viewer. The gradient methods take ONE forward and one backward per batch (per
class in the viewer): a forward hook swaps the target layer's output for a detached leaf
that requires grad, so autograd records only the head after that layer and the backward
stops there (no weight gradients, no backward through the backbone).
"""
from __future__ import annotations

from typing import TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .hooks import _Capture, _check_inputs, _check_targets, _hooked, _prepared, _to_device
from .methods import DEFAULT_CAM_METHOD, CamBatch, CamMethod, cam_method

_EPS = 1e-7  # a map spanning less than this is constant: it becomes zeros


class CamOptions(TypedDict):
    """How every CAM of one explanation is computed (``compute_cams``'s options)."""

    method: str
    batch_size: int
    device: str | torch.device | None


def compute_cams(model: nn.Module, x: Tensor, *, target_layer: nn.Module, targets: Tensor,
                 method: str = DEFAULT_CAM_METHOD, batch_size: int = 64,
                 device: str | torch.device | None = None) -> Tensor:
    """CAMs (B, H, W) in [0, 1] on the CPU, bilinearly resized to the input size.

    ``targets`` holds one class index per image; ``method`` names a registered
    :class:`CamMethod`. Each map is min-max normalised on its own; a constant map becomes zeros.
    """
    cam = cam_method(method)
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    _check_inputs(x, targets)
    size = (int(x.shape[2]), int(x.shape[3]))
    out: list[Tensor] = []
    with _prepared(model, device) as dev, _hooked(target_layer) as capture:
        starts = range(0, x.shape[0], max(1, batch_size))
        for start in tqdm(starts, desc=f"{method} CAMs", leave=False, disable=None):
            xb = _to_device(x[start:start + batch_size], dev)
            tb = targets[start:start + batch_size].to(dev)
            raw = _raw_maps(model, xb, tb, capture, method=cam, batch_size=batch_size)
            out.append(_normalise_maps(raw, size).cpu())
    if not out:
        return torch.zeros((0, *size))
    return torch.cat(out)


def _raw_maps(model: nn.Module, xb: Tensor, tb: Tensor, capture: _Capture, *,
              method: CamMethod, batch_size: int) -> Tensor:
    """Unnormalised (B, h, w) maps at the target layer's resolution."""
    if method.needs_gradients:
        with torch.enable_grad():
            logits = model(xb)
            _check_targets(tb, logits.shape[1])
            score = logits.gather(1, tb[:, None]).sum()
            (grads,) = torch.autograd.grad(score, capture.grad_leaf, allow_unused=True)
        acts = capture.output.detach()
        grads = torch.zeros_like(acts) if grads is None else grads
        return method.maps(CamBatch(model, xb, acts, batch_size), tb, grads)
    with torch.no_grad():
        logits = model(xb)
        _check_targets(tb, logits.shape[1])
        return method.maps(CamBatch(model, xb, capture.output.detach(), batch_size), tb, None)


def _normalise_maps(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """relu -> bilinear resize -> per-image min-max; a constant map becomes zeros."""
    maps = torch.nan_to_num(raw.float()).clamp(min=0)[:, None]
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]
    return _minmax(maps)


def _minmax(maps: Tensor) -> Tensor:
    lo = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - lo
    safe = torch.where(span > _EPS, span, torch.ones_like(span))
    return torch.where(span > _EPS, (maps - lo) / safe, torch.zeros_like(maps)).clamp(0, 1)


VIEWER_MAX_GRID = 32  # the report's viewer upsamples in the browser: a coarse grid is enough


def viewer_maps(model: nn.Module, x: Tensor, *, target_layer: nn.Module, method: str = DEFAULT_CAM_METHOD,
                batch_size: int = 64, device: str | torch.device | None = None) -> Tensor:
    """Maps for EVERY class, (N, K, h, w) uint8 in 0..255, at the target layer's own grid.

    For the interactive viewer, which lets a reader pick the class a map explains. One
    forward pass per batch serves all K classes: the gradient methods take K backward passes
    through the head only (the target layer's output is a leaf), 'cam' and 'eigencam' need no
    backward, and 'scorecam' scores every class on the same masked inputs. Each map is
    relu'd and min-max normalised on its own grid (a constant map becomes zeros); a grid
    wider than VIEWER_MAX_GRID is average-pooled down to it.
    """
    cam = cam_method(method)
    _check_inputs(x, torch.zeros(x.shape[0], dtype=torch.long))
    out: list[Tensor] = []
    with _prepared(model, device) as dev, _hooked(target_layer) as capture:
        for start in tqdm(range(0, x.shape[0], max(1, batch_size)), desc=f"{method} maps (all classes)",
                          leave=False, disable=None):
            xb = _to_device(x[start:start + batch_size], dev)
            raw = _all_class_maps(model, xb, capture, method=cam, batch_size=batch_size)
            out.append(_quantise_grid(raw).cpu())
    if not out:
        return torch.zeros((0, 0, 0, 0), dtype=torch.uint8)
    return torch.cat(out)


def _all_class_maps(model: nn.Module, xb: Tensor, capture: _Capture, *, method: CamMethod,
                    batch_size: int) -> Tensor:
    """Unnormalised (B, K, h, w) maps of one batch for every output class."""
    if method.needs_gradients:
        with torch.enable_grad():
            logits = model(xb)
            k = logits.shape[1]
            batch = CamBatch(model, xb, capture.output.detach(), batch_size)
            maps = []
            for c in range(k):
                (grads,) = torch.autograd.grad(logits[:, c].sum(), capture.grad_leaf,
                                               retain_graph=c < k - 1, allow_unused=True)
                grads = torch.zeros_like(batch.acts) if grads is None else grads
                targets = torch.full((xb.shape[0],), c, dtype=torch.long, device=xb.device)
                maps.append(method.maps(batch, targets, grads))
        return torch.stack(maps, dim=1)
    with torch.no_grad():
        logits = model(xb)
        return method.class_maps(CamBatch(model, xb, capture.output.detach(), batch_size), logits.shape[1])


def _quantise_grid(raw: Tensor) -> Tensor:
    b, k, h, w = raw.shape
    maps = torch.nan_to_num(raw.float()).clamp(min=0)
    if max(h, w) > VIEWER_MAX_GRID:
        maps = F.adaptive_avg_pool2d(maps, (min(h, VIEWER_MAX_GRID), min(w, VIEWER_MAX_GRID)))
    maps = _minmax(maps.reshape(b * k, *maps.shape[-2:]))
    return (maps * 255).round().to(torch.uint8).reshape(b, k, *maps.shape[-2:])
