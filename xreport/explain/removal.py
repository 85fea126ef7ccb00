"""Faithfulness by pixel removal: deletion, insertion and ROAD (MoRF, LeRF) of a CAM against
random maps, with a paired verdict per score (``verdicts.paired``)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import artifacts, verdicts
from ..errors import ConfigError, ReportError
from ..metrics import curve_area
from .hooks import _check_targets, _prepared, _to_device
from .imputation import ROAD_NOISE, noisy_linear_impute
from .reference_maps import _RANDOM_GRID, RANDOM_PER_IMAGE, random_maps


BASELINES = ("blur", "mean")
CURVES = ("deletion", "insertion", "road_morf", "road_lerf")
# A random map has no order: removing the least salient share f of map m removes the most
# salient share f of 1 - m, and 1 - m is a random map of the same law (uniform grid noise,
# bilinear, min-max; ties seeded). So the random reference of LeRF is the random MoRF curve,
# and inserting the top share f of m is deleting the top share 1 - f of 1 - m: the random
# insertion curve is the deletion curve read backwards. Only these two go through the model,
# which halves the reference's imputations and forward passes, the bulk of the checks' cost.
_RANDOM_CURVES = ("deletion", "road_morf")
_CHUNK_VALUES = 2 ** 22  # floats per perturbed chunk (16 MB): bounds memory at 224 px
# score -> (curve it summarises, higher is better)
FAITH_SCORES = {"deletion_auc": ("deletion", False), "insertion_auc": ("insertion", True),
                "road_morf": ("road_morf", False), "road_lerf": ("road_lerf", True)}


def faithfulness(model: nn.Module, x: Tensor, cams: Tensor, *, targets: Tensor, steps: int = 10,
                 seed: int = 0, baseline: str = "blur", random_per_image: int = RANDOM_PER_IMAGE,
                 batch_size: int = 64, device: str | torch.device | None = None,
                 precision: str = "fp32") -> artifacts.Faithfulness:
    """Deletion, insertion and ROAD of the CAM against random maps, with a paired verdict per score.

    Pixels are removed in the order the map ranks them (ties in a seeded random order, so
    exactly the stated share goes at each step), in ``steps`` equal increments:
    - deletion replaces the most salient pixels with the baseline image (a heavy blur, or the
      image mean); insertion starts from the baseline and puts them back; the score is the
      trapezoid area under the target-class probability on [0, 1];
    - ROAD (Rong et al., 2022, remove and debias) fills the removed pixels by noisy linear
      imputation (each one the weighted mean of its 8 neighbours, plus N(0, 0.01) noise), most
      relevant first (MoRF, lower is better) and least relevant first (LeRF, higher is
      better) at the interior fractions; the score is the mean probability over them.
    The reference of each image is the mean score of ``random_per_image`` random maps
    (``random_maps``, seeded). Each score gets ``verdicts.paired`` over the images.
    """
    if baseline not in BASELINES:
        raise ConfigError(f"faithfulness baseline {baseline!r} is not one of {', '.join(BASELINES)}")
    if steps < 1:
        raise ConfigError(f"faithfulness steps must be at least 1, got {steps}")
    if random_per_image < 1:
        raise ConfigError(f"faithfulness needs at least 1 random map per image, got {random_per_image}")
    n, _, h, w = x.shape
    if cams.shape != (n, h, w):
        raise ReportError(f"faithfulness: cams have shape {tuple(cams.shape)}, expected {(n, h, w)}")
    targets = torch.as_tensor(targets, dtype=torch.long).reshape(-1)
    k = int(random_per_image)
    base = _baseline_images(x, baseline)
    rand = random_maps(n * k, h, w, seed=seed)  # k consecutive maps per image
    with _prepared(model, device) as dev, torch.inference_mode():
        ends = _probs_of(model, torch.cat([x, base]), targets.repeat(2), batch_size, dev, precision)
        p_full, p_base = ends[:n], ends[n:]
        per_image: dict[str, dict[str, Tensor]] = {}
        for name, maps, rows in (("cam", cams.float().cpu(), torch.arange(n)),
                                 ("random", rand, torch.arange(n).repeat_interleave(k))):
            kinds = CURVES if name == "cam" else _RANDOM_CURVES
            curves = _curves(model, x, base, _pixel_ranks(maps, seed=seed), targets, rows=rows,
                             steps=steps, batch_size=batch_size, device=dev, seed=seed,
                             precision=precision, kinds=kinds)
            if name == "random":
                curves.update(_mirrored_random_curves(curves))
            curves["deletion"] = torch.cat([p_full[rows, None], curves["deletion"], p_base[rows, None]], 1)
            curves["insertion"] = torch.cat([p_base[rows, None], curves["insertion"], p_full[rows, None]], 1)
            # The reference curve of an image is the mean over its k random maps.
            reps = 1 if name == "cam" else k
            per_image[name] = {key: c.reshape(n, reps, -1).mean(1) for key, c in curves.items()}
    stats: dict[str, artifacts.PairedStatistic] = {}
    means: dict[str, artifacts.CamCurves] = {}
    for score, (curve, higher) in FAITH_SCORES.items():
        cam_c, rnd_c = per_image["cam"][curve], per_image["random"][curve]
        summarise = _curve_area if curve in ("deletion", "insertion") else _interior_mean
        stats[score] = verdicts.paired(summarise(cam_c), summarise(rnd_c), higher_is_better=higher,
                                       margin=verdicts.FAITHFULNESS_MARGIN, seed=seed, against="random")
        means[curve] = {"cam": cam_c.mean(0).tolist() if n else [], "random": rnd_c.mean(0).tolist() if n else []}
    return {
        "n": int(n), "steps": int(steps), "baseline": baseline,
        "random_maps": {"per_image": k, "grid": _RANDOM_GRID, "made": "uniform noise on a 7x7 grid, "
                        "upsampled bilinearly with a random sub-cell shift, min-max normalised"},
        "ties": "seeded random order", "road_noise": ROAD_NOISE, "scores": list(FAITH_SCORES),
        "precision": precision,
        "deletion_auc": stats["deletion_auc"], "deletion_curve": means["deletion"],
        "insertion_auc": stats["insertion_auc"], "insertion_curve": means["insertion"],
        "road_morf": stats["road_morf"], "road_morf_curve": means["road_morf"],
        "road_lerf": stats["road_lerf"], "road_lerf_curve": means["road_lerf"],
        "verdict": verdicts.overall([str(stat["verdict"]) for stat in stats.values()])}


def _mirrored_random_curves(curves: dict[str, Tensor]) -> dict[str, Tensor]:
    """The random reference's insertion and ROAD LeRF curves from its deletion and MoRF ones."""
    return {"insertion": curves["deletion"].flip(1), "road_lerf": curves["road_morf"]}


def _baseline_images(x: Tensor, baseline: str) -> Tensor:
    """What a removed pixel becomes: a heavily blurred copy, or the per-channel image mean."""
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    sigma = max(1.0, min(x.shape[-2:]) / 16)
    return gaussian_blur(x, sigma=sigma)


def gaussian_blur(x: Tensor, *, sigma: float) -> Tensor:
    """Separable Gaussian blur of a (B, C, H, W) tensor, edges replicated."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    c = x.shape[1]
    out = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _pixel_ranks(maps: Tensor, *, seed: int) -> Tensor:
    """(n, H*W) rank of each pixel, 0 = most salient; ties in a seeded random order."""
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    perm = torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(seed + 1))
    order = perm[torch.argsort(flat[:, perm], dim=1, descending=True, stable=True)]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1]).expand(n, -1).contiguous())
    return ranks


def _curves(model: nn.Module, x: Tensor, base: Tensor, ranks: Tensor, targets: Tensor, *,
            rows: Tensor, steps: int, batch_size: int, device: torch.device,
            seed: int, precision: str = "fp32",
            kinds: tuple[str, ...] = CURVES) -> dict[str, Tensor]:
    """Target probabilities at the interior steps 1..steps-1 for every perturbation, (m, steps-1).

    Map ``i`` (row of ``ranks``) perturbs image ``rows[i]``; the curves in ``kinds`` (of
    deletion, insertion, ROAD MoRF and ROAD LeRF) of a chunk of maps go through the model as
    one batch.
    """
    m, hw = ranks.shape
    c, h, w = x.shape[1:]
    inner = steps - 1
    if inner == 0 or m == 0:
        return {key: torch.zeros((m, 0)) for key in kinds}
    counts = torch.round(torch.arange(1, steps) / steps * hw).long()
    noise = torch.Generator().manual_seed(seed + 3)
    # Maps per chunk: at least one batch of perturbed images, and as many more as fit in
    # _CHUNK_VALUES: every image, removal level and map of a chunk is imputed in one batched
    # multigrid solve and scored in one pass.
    per = max(1, batch_size // (len(kinds) * inner), _CHUNK_VALUES // (len(kinds) * inner * c * h * w))
    out: dict[str, list[Tensor]] = {key: [] for key in kinds}
    for start in tqdm(range(0, m, per), desc="faithfulness", leave=False, disable=None):
        sl = slice(start, start + per)
        r = ranks[sl, None, :]
        top = (r < counts[None, :, None]).view(-1, inner, 1, h, w).to(x.dtype)        # most salient
        idx = rows[sl]
        xb, bb = x[idx][:, None], base[idx][:, None]
        b = top.shape[0]
        flat = (b * inner, c, h, w)

        def perturbed(kind: str) -> Tensor:
            if kind == "deletion":
                return (xb * (1 - top) + bb * top).reshape(flat)
            if kind == "insertion":
                return (bb * (1 - top) + xb * top).reshape(flat)
            xs = xb.expand(b, inner, c, h, w).reshape(flat)
            removed = top if kind == "road_morf" else (r >= hw - counts[None, :, None]).view(-1, inner, 1, h, w)
            return noisy_linear_impute(xs, removed.to(x.dtype).reshape(b * inner, 1, h, w), generator=noise)

        batch = torch.cat([perturbed(kind) for kind in kinds])
        tb = targets[idx].repeat_interleave(inner).repeat(len(kinds))
        probs = _probs_of(model, batch, tb, batch_size, device, precision).view(len(kinds), b, inner)
        for key, p in zip(kinds, probs):
            out[key].append(p)
    return {key: torch.cat(parts) for key, parts in out.items()}


def _probs_of(model: nn.Module, x: Tensor, targets: Tensor, batch_size: int,
              device: torch.device, precision: str = "fp32") -> Tensor:
    from ..device import autocast

    # The evaluation's precision (fp32 unless bf16 was asked for: device.EVAL_PRECISION).
    out = []
    for start in range(0, x.shape[0], max(1, batch_size)):
        with autocast(device, precision):
            logits = model(_to_device(x[start:start + batch_size], device)).float()
        out.append(_target_probs(logits, targets[start:start + batch_size].to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def _target_probs(logits: Tensor, targets: Tensor) -> Tensor:
    """Probability of the target class: softmax, or a sigmoid for a one-logit head."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.where(targets == 1, p, 1 - p)
    _check_targets(targets, logits.shape[1])
    return torch.softmax(logits, dim=1).gather(1, targets[:, None])[:, 0]


def _curve_area(curves: Tensor) -> np.ndarray:
    """Per-image area under deletion/insertion curves, (n,): metrics.curve_area, the one
    trapezoid rule the faithfulness chart labels its curves with too."""
    return curve_area(curves.numpy())


def _interior_mean(curves: Tensor) -> np.ndarray:
    """Per-image mean over the interior fractions (ROAD averages its removal levels), (n,)."""
    if curves.shape[1] == 0:
        return np.full(curves.shape[0], np.nan)
    return curves.mean(1).numpy()
