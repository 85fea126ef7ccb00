"""Batched augmentation on tensors (CPU or CUDA): no PIL round trip, one grid_sample."""
from __future__ import annotations

import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

import torch
import torch.nn.functional as F

from ..artifacts import TtaView
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


# ---------------------------------------------------------------- batch mixing

MixKind = typing.Literal["mixup", "cutmix"]


@dataclass(frozen=True)
class MixedBatch:
    """A training batch blended with a shuffled copy of itself (mixup or cutmix).

    Image i is ``weight`` parts itself and ``1 - weight`` parts image ``partner[i]``, so its
    target is the same blend of its own label and its partner's (``mix_loss``).
    """

    images: torch.Tensor
    partner: torch.Tensor   # (B,) long: index of each image's partner in the batch
    weight: float           # share of each image's own content (cutmix: of its pixels)
    kind: MixKind

    def dominant_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The label with the larger share, for the train accuracy of mixed batches."""
        return labels if self.weight >= 0.5 else labels[self.partner]


def mixing_kinds(cfg: AugmentConfig) -> list[tuple[MixKind, float]]:
    """The batch-mixing kinds ``cfg`` switches on, with their Beta alpha, in draw order."""
    strengths: tuple[tuple[MixKind, float], ...] = (("mixup", cfg.mixup), ("cutmix", cfg.cutmix))
    return [(kind, alpha) for kind, alpha in strengths if alpha > 0]


def mix_batch(x: torch.Tensor, cfg: AugmentConfig, *, generator: torch.Generator) -> MixedBatch | None:
    """Blend ``x`` (B, C, H, W) with a permutation of itself as ``cfg.mixup`` / ``cfg.cutmix``
    ask; None when both are off or the batch has a single image.

    All randomness comes from ``generator`` (the kind, the Beta weight, the permutation and
    the box), so a seeded generator mixes the same way on every run.
    """
    kinds = mixing_kinds(cfg)
    if not kinds or x.shape[0] < 2:
        return None
    pick = float(_uniform((1,), generator, torch.device("cpu")))
    kind, alpha = kinds[min(int(pick * len(kinds)), len(kinds) - 1)]
    # torch's Beta sampler takes no generator: a numpy stream seeded from this one.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    weight = float(np.random.default_rng(seed).beta(alpha, alpha))
    partner = torch.randperm(x.shape[0], generator=generator, device=generator.device).to(x.device)
    if kind == "mixup":
        return MixedBatch(x * weight + x[partner] * (1 - weight), partner, weight, kind)
    h, w = x.shape[-2:]
    cut_h, cut_w = round(h * math.sqrt(1 - weight)), round(w * math.sqrt(1 - weight))
    centre = _uniform((2,), generator, torch.device("cpu"))
    cy, cx = int(centre[0] * h), int(centre[1] * w)
    y0, y1 = max(0, cy - cut_h // 2), min(h, cy + cut_h - cut_h // 2)
    x0, x1 = max(0, cx - cut_w // 2), min(w, cx + cut_w - cut_w // 2)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[partner][..., y0:y1, x0:x1]
    # The box may be clipped at the border: the weight is the share actually kept.
    return MixedBatch(out, partner, 1.0 - (y1 - y0) * (x1 - x0) / (h * w), kind)


def mix_loss(criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], logits: torch.Tensor,
             labels: torch.Tensor, mix: MixedBatch | None) -> torch.Tensor:
    """``criterion`` against the batch's targets: the labels, or for a mixed batch the same
    blend of each image's label and its partner's as its pixels."""
    if mix is None:
        return criterion(logits, labels)
    return mix.weight * criterion(logits, labels) + (1 - mix.weight) * criterion(logits, labels[mix.partner])


# ---------------------------------------------------------------- test-time views

# The exact symmetries of a square image (the dihedral group), each an index operation on
# the last two axes of (..., H, W). The order is the order views are listed and averaged in.
_VIEWS: dict[TtaView, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "rot90": lambda x: x.rot90(1, (-2, -1)),
    "rot180": lambda x: x.rot90(2, (-2, -1)),
    "rot270": lambda x: x.rot90(3, (-2, -1)),
    "transpose": lambda x: x.transpose(-2, -1),
    "antitranspose": lambda x: x.rot90(2, (-2, -1)).transpose(-2, -1),
}
# Views that swap height and width: only for square inputs.
_SWAPS_AXES = frozenset({"rot90", "rot270", "transpose", "antitranspose"})
VIEW_NAMES: tuple[TtaView, ...] = tuple(_VIEWS)
assert set(VIEW_NAMES) == set(typing.get_args(TtaView)), "artifacts.TtaView and _VIEWS disagree"


def tta_views(cfg: AugmentConfig, *, square: bool = True) -> tuple[TtaView, ...]:
    """The test-time views a model trained with ``cfg`` has learnt to treat alike: the
    identity, and the group generated by the exact symmetries its augmentation drew
    (a horizontal flip when ``hflip`` > 0, a vertical flip when ``vflip`` > 0, quarter turns
    when ``rotation`` >= 90 degrees). Closed under composition because training composed
    them (hflip then vflip is a half turn): a colour hflip run gets 2 views, a run with a
    flip and quarter turns all 8, a grey radiograph trained without flips the identity only.
    Rotations by less than 90 degrees, shifts and intensity changes give no exact view.
    ``square`` False (H != W) keeps only the views that keep the shape."""
    generators: list[TtaView] = []
    if cfg.hflip > 0:
        generators.append("hflip")
    if cfg.vflip > 0:
        generators.append("vflip")
    if cfg.rotation >= 90:
        generators.append("rot90")
    # Identify each composition by what it does to a probe whose 9 pixels all differ.
    probe = torch.arange(9).view(3, 3)
    known = {name: fn(probe) for name, fn in _VIEWS.items()}
    found: dict[TtaView, torch.Tensor] = {"identity": probe}
    frontier = [probe]
    while frontier:
        image = frontier.pop()
        for g in generators:
            moved = _VIEWS[g](image)
            name = next(n for n, v in known.items() if torch.equal(v, moved))
            if name not in found:
                found[name] = moved
                frontier.append(moved)
    return tuple(n for n in VIEW_NAMES if n in found and (square or n not in _SWAPS_AXES))


def apply_views(x: torch.Tensor, views: Sequence[TtaView]) -> torch.Tensor:
    """(B, C, H, W) -> (V*B, C, H, W): every image under each view, view-major, so one
    forward pass scores them all (``unstack`` by view with ``.view(V, B, ...)``)."""
    if not views:
        raise DataError("apply_views: no views given (the identity is always one)")
    return torch.cat([_VIEWS[v](x) for v in views])
