"""ROAD's noisy linear imputation (Rong et al., 2022): removed pixels filled from their
neighbours by a batched conjugate-gradient solve with a multigrid preconditioner."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import Tensor

from ..device import torch_threads

ROAD_NOISE = 0.01  # std of the noise ROAD adds to imputed pixels (Rong et al.'s default)
_NEIGHBOUR_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))
# Relative residual at which the imputation's solve stops: the filled pixels are then within
# 5e-3 of the exact solution on images of range ~6 (tests), half ROAD_NOISE.
IMPUTE_TOL = 1e-3
IMPUTE_MAX_ITER = 100  # multigrid-preconditioned CG converges in 10-20 iterations at any size
_COARSEST = 12  # the V-cycle stops halving below this side and relaxes there instead
_SOLVE_VALUES = 2 ** 18  # pixels solved side by side (1 MB of float32): 5 systems at 224 px


def noisy_linear_impute(x: Tensor, removed: Tensor, *, noise: float = ROAD_NOISE,
                        generator: torch.Generator | None = None, tol: float = IMPUTE_TOL) -> Tensor:
    """ROAD's noisy linear imputation of the ``removed`` pixels of (B, C, H, W) images.

    Each removed pixel equals the weighted mean of its 8 neighbours (weights 1/6 sideways,
    1/12 diagonal, only neighbours inside the image), the known pixels stay: the sparse
    system of Rong et al.'s reference code (pytorch_grad_cam's ``NoisyLinearImputer``, which
    solves it exactly with ``scipy.sparse.linalg.spsolve``, one image at a time). Here the
    systems are solved side by side (on a CPU a few at a time) by conjugate gradients
    preconditioned with a geometric multigrid V-cycle (:func:`_v_cycle`), to a relative
    residual ``tol``: 10-20 iterations at 28 px as at 224 px, where plain CG needs on the
    order of max(H, W). N(0, ``noise``) is added to the filled pixels. ``removed`` is (B, 1, H, W), 1 where a pixel is removed.
    """
    b, c, h, w = x.shape
    u = removed.to(x.dtype).reshape(b, 1, h, w)
    # Channels share the mask: each (image, channel) is one system, solved side by side, on
    # a CPU a few at a time: a batch iterates until its slowest system converges, and beyond a few
    # MB per tensor every pass runs from memory instead of cache (at 224 px, 64 systems per
    # solve cost 1.8x the time per image of 5, at 128 px 1.7x).
    cpu = x.device.type == "cpu"
    flat, masks = x.reshape(b * c, 1, h, w), u.repeat_interleave(c, 0)
    per = max(1, _SOLVE_VALUES // (h * w)) if cpu else max(1, b * c)   # a GPU wants one big batch
    # One CPU thread per solve: each of its many passes over a MB is over before a second
    # OpenMP thread pays off, and on a busy machine the threads spin at every barrier (on 2
    # cores under load 3, 2 threads took 25-35x the time of 1 at 128-224 px). The solves
    # run side by side instead, as many at once as torch was given threads.
    starts = range(0, b * c, per)
    workers = min(len(starts), torch.get_num_threads()) if cpu else 1
    with torch_threads(1 if cpu else 0), ThreadPoolExecutor(max(1, workers)) as pool:
        filled = torch.cat(list(pool.map(lambda i: _multigrid_cg(flat[i:i + per], masks[i:i + per], tol=tol),
                                         starts))).reshape(b, c, h, w)
    jitter = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) * noise
    return x * (1 - u) + (filled + jitter) * u


def _neighbours(t: Tensor) -> Tensor:
    """Weighted sum of the 8 neighbours inside the image, (N, 1, H, W): the kernel
    [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 is ([1, 2, 1] outer [1, 2, 1] - 4 delta) / 12, so two
    1-D passes of shifted adds (a depthwise 3x3 convolution is 5-10x slower on CPU)."""
    rows = 2 * t
    rows[..., 1:] += t[..., :-1]
    rows[..., :-1] += t[..., 1:]
    both = 2 * rows
    both[..., 1:, :] += rows[..., :-1, :]
    both[..., :-1, :] += rows[..., 1:, :]
    return (both - 4 * t) * (1 / 12)


def _degree(h: int, w: int, like: Tensor) -> Tensor:
    """Sum of the weights of each pixel's neighbours inside the image (1 away from the edge)."""
    return _neighbours(torch.ones((1, 1, h, w), dtype=like.dtype, device=like.device))


def _apply(t: Tensor, u: Tensor, degree: Tensor) -> Tensor:
    """The system on the removed pixels (u = 1): symmetric positive definite there."""
    return (degree * t - _neighbours(t * u)) * u


def _v_cycle(r: Tensor, u: Tensor) -> Tensor:
    """One symmetric V-cycle: an approximate solve of the system for residual ``r``.

    Jacobi smoothing before and after; the residual is summed over 2x2 blocks to a grid of
    half the side, where a block is unknown when any of its pixels is, and the coarse
    correction is copied back to the block's pixels (the sum's transpose). Summing keeps the
    scale right: the stencil on a grid of twice the spacing is 4x stronger. Below
    ``_COARSEST`` px Jacobi sweeps stand in for an exact solve.
    """
    _, _, h, w = r.shape
    degree = _degree(h, w, r)
    inverse = u / degree
    if min(h, w) < 2 * _COARSEST:
        z = torch.zeros_like(r)
        for _ in range(2 * max(h, w)):
            z = z + inverse * (r - _apply(z, u, degree))
        return z
    z = inverse * r
    coarse_r = F.avg_pool2d(r - _apply(z, u, degree), 2, ceil_mode=True) * 4
    coarse_z = _v_cycle(coarse_r, F.max_pool2d(u, 2, ceil_mode=True))
    z = z + F.interpolate(coarse_z, scale_factor=2, mode="nearest")[..., :h, :w] * u
    return z + inverse * (r - _apply(z, u, degree))


def _multigrid_cg(x: Tensor, u: Tensor, *, tol: float) -> Tensor:
    """(N, 1, H, W) images with the pixels where ``u`` is 1 solved for; flexible
    preconditioned CG (Polak-Ribiere beta, as the coarsest relaxation is not exactly
    symmetric), every image until its own relative residual is below ``tol``."""
    _, _, h, w = x.shape
    degree = _degree(h, w, x)
    known = 1 - u
    rhs = _neighbours(x * known) * u
    # Start from the mean of the known pixels (0 where none is known: nothing to solve from).
    v = ((x * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1)) * u
    r = rhs - _apply(v, u, degree)
    limit = tol * tol * (rhs * rhs).sum((1, 2, 3)).clamp(min=1e-12)
    z = _v_cycle(r, u)
    p, rz = z, (r * z).sum((1, 2, 3))
    for _ in range(IMPUTE_MAX_ITER):
        # A converged image stops moving (alpha = beta = 0): iterating on at float32's
        # rounding level would only divide noise by noise.
        live = (r * r).sum((1, 2, 3)) > limit
        if not bool(live.any()):
            break
        ap = _apply(p, u, degree)
        pap = (p * ap).sum((1, 2, 3))
        ok = live & (pap > 0) & (rz > 0)
        alpha = torch.where(ok, rz / torch.where(ok, pap, 1), 0)[:, None, None, None]
        v = v + alpha * p
        r_next = r - alpha * ap
        z = _v_cycle(r_next, u)
        beta = torch.where(ok, (z * (r_next - r)).sum((1, 2, 3)) / torch.where(ok, rz, 1), 0)
        r, rz = r_next, (r_next * z).sum((1, 2, 3))
        p = z + beta[:, None, None, None] * p
    return x * known + v * u
