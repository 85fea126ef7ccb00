"""The seeded random maps that every CAM score is compared against (faithfulness and
localisation): blob-like, made the way a CAM is made."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .cams import _minmax


_RANDOM_GRID = 7  # random maps are upsampled from a coarse grid so they are blob-like, as CAMs are
RANDOM_PER_IMAGE = 3  # random maps per image whose scores are averaged into its reference


def random_maps(n: int, height: int, width: int, *, seed: int = 0) -> Tensor:
    """Seeded blob-like random maps (n, H, W) in [0, 1], made the way a CAM is made.

    Uniform noise on a 7x7 grid (the CAM grid of the usual target layer) is upsampled
    bilinearly, so the blobs are as large as a CAM's; each map's grid is shifted by a
    random fraction of a cell, so its maximum can fall on any pixel (an unshifted grid puts
    every maximum on one of 49 node positions, and the random pointing game would depend
    on where those happen to lie).
    """
    gen = torch.Generator().manual_seed(seed)
    g = _RANDOM_GRID
    coarse = torch.rand((n, 1, g + 1, g + 1), generator=gen)
    shift = torch.rand((n, 1, 1, 2), generator=gen)  # (x, y) in cells, [0, 1)
    # Pixel centres in coarse-cell units, as bilinear upsampling (align_corners=False) puts them.
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * g / width - 0.5
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * g / height - 0.5
    px = (xs[None, None, :] + shift[..., 0]).expand(n, height, width)
    py = (ys[None, :, None] + shift[..., 1]).expand(n, height, width)
    # grid_sample's normalised coordinates for an input of g + 1 cells (align_corners=False).
    grid = torch.stack([(2 * px + 1) / (g + 1) - 1, (2 * py + 1) / (g + 1) - 1], dim=-1)
    maps = F.grid_sample(coarse, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]
    return _minmax(maps)
