"""The cascading model-parameter randomisation check (Adebayo et al., 2018): do the maps
change when what the model learned is destroyed, stage by stage, over several seeds?"""
from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import artifacts, verdicts
from ..errors import ConfigError
from .cams import compute_cams
from .hooks import TargetLayerFn, _as_module, _final_linear, _module_path

logger = logging.getLogger(__name__)

SANITY_SEEDS = 3  # initialisations of the cascade; the report shows their mean ± sd per stage


def sanity_check(model: nn.Module, x: Tensor, *, targets: Tensor, method: str,
                 target_layer_fn: TargetLayerFn, seed: int = 0, seeds: int = SANITY_SEEDS,
                 original: Tensor | None = None, batch_size: int = 64,
                 device: str | torch.device | None = None) -> artifacts.Sanity:
    """Cascading model-parameter randomisation (Adebayo et al., 2018), over several seeds.

    A deep copy of the model has its classifier re-initialised, then, cumulatively and top
    down, one block at a time down to the target layer's stage (``cascade_stages``); the maps
    are recomputed after each stage and compared with the trained model's maps by Spearman
    rank correlation and SSIM per image. The cascade is repeated with ``seeds`` different
    initialisations. Per stage: the mean over seeds and images, the sd over seeds of the
    per-seed means, and ``verdicts.below_limit`` on the per-image means over seeds. The
    verdict of the check is that of the last, most randomised stage: maps that survive
    randomisation reflect the image (edges), not what the model learned. ``original``: the
    trained model's maps of ``x`` when the caller already has them.
    """
    if seeds < 1:
        raise ConfigError(f"sanity check needs at least 1 seed, got {seeds}")
    if original is None:
        original = compute_cams(model, x, target_layer=_as_module(target_layer_fn(model)),
                                targets=targets, method=method, batch_size=batch_size, device=device)
    names = cascade_stages(model, _as_module(target_layer_fn(model)))
    similarity = {key: torch.full((seeds, len(names), x.shape[0]), float("nan")) for key in ("spearman", "ssim")}
    bar = tqdm(total=seeds * len(names), desc="sanity check", unit="stage", leave=False, disable=None)
    for s in range(seeds):
        twin = copy.deepcopy(model)
        for i, name in enumerate(names):
            _reinitialise(twin, [name], seed=seed + 1000 * s + i)
            maps = compute_cams(twin, x, target_layer=_as_module(target_layer_fn(twin)), targets=targets,
                                method=method, batch_size=batch_size, device=device)
            similarity["spearman"][s, i] = spearman(original, maps)
            similarity["ssim"][s, i] = ssim(original, maps)
            bar.update()
        del twin
    bar.close()
    stages: list[artifacts.SanityStage] = []
    for i, name in enumerate(names):
        cells: dict[str, artifacts.Similarity] = {}
        for key in ("spearman", "ssim"):
            values = similarity[key][:, i]  # (seeds, n)
            per_seed = values.nanmean(1)
            stat = verdicts.below_limit(values.nanmean(0).numpy(), limit=verdicts.SANITY_SPEARMAN_LIMIT,
                                        seed=seed)
            stat["sd_seeds"] = float(per_seed.std(unbiased=True)) if seeds > 1 else None
            stat["per_seed"] = [float(v) for v in per_seed]
            cells[key] = stat
        cells["ssim"].pop("verdict"), cells["ssim"].pop("limit")  # the rule reads Spearman only
        stage: artifacts.SanityStage = {"randomised": name, "spearman": cells["spearman"], "ssim": cells["ssim"],
                                        "verdict": cells["spearman"]["verdict"]}
        stages.append(stage)
        logger.debug("sanity stage %s: %s", name, stage)
    verdict = stages[-1]["verdict"] if stages else verdicts.INCONCLUSIVE
    return {"n": int(x.shape[0]), "seeds": int(seeds), "stages": stages,
            "layers_randomised": names, "verdict": verdict,
            "rule": {"similarity": "spearman", "stage": "last", "limit": verdicts.SANITY_SPEARMAN_LIMIT}}


def cascade_stages(model: nn.Module, target_layer: nn.Module) -> list[str]:
    """The modules the cascade re-initialises, one per stage, top down.

    The classifier first, then the blocks in reverse order of the forward pass, one at a
    time: a block is the outermost module with parameters whose parent is an
    ``nn.Sequential`` (ResNet's ``layer4.1``, DenseNet's ``features.denseblock4`` or
    ``features.norm5``). The cascade goes down to and including the target layer's stage:
    the nearest block at or before the target that holds a convolution (DenseNet's
    ``norm5`` extends to ``denseblock4``), and, when that block sits in a Sequential of
    blocks of one type (a ResNet stage such as ``layer3``), every block of that stage.
    """
    classifier = _final_linear(model)[0]
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}
    blocks: list[str] = []
    for name, module in modules.items():
        parent = modules.get(name.rpartition(".")[0]) if name else None
        inside = any(name.startswith(b + ".") for b in blocks)
        if (isinstance(parent, nn.Sequential) and not inside
                and any(True for _ in module.parameters())):
            blocks.append(name)
    target = _module_path(model, target_layer)

    def has_conv(name: str) -> bool:
        return any(isinstance(m, nn.Conv2d) for m in modules[name].modules())

    candidates = [b for b in blocks if order[b] <= order[target] and has_conv(b)]
    if not candidates:
        return [classifier]
    floor = candidates[-1]
    stage_name = floor.rpartition(".")[0]
    stage = modules.get(stage_name)
    if stage_name and isinstance(stage, nn.Sequential) and len({type(m) for m in stage}) == 1:
        floor = f"{stage_name}.{next(iter(stage._modules))}"  # the stage's first block
    after_target = [b for b in blocks if order[b] >= order[floor]]
    return [classifier] + after_target[::-1]


def _reinitialise(model: nn.Module, names: Sequence[str], *, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            for module in model.get_submodule(name).modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Per-image Spearman rank correlation of two (B, H, W) map stacks (average ranks for ties).

    A constant map has no ranking: against a varying map it scores 0 (no association),
    against another constant map 1 (the maps are identical in rank).
    """
    ra = torch.from_numpy(rankdata(a.reshape(a.shape[0], -1).cpu().numpy(), axis=1))
    rb = torch.from_numpy(rankdata(b.reshape(b.shape[0], -1).cpu().numpy(), axis=1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    na, nb = ra.norm(dim=1), rb.norm(dim=1)
    corr = (ra * rb).sum(1) / torch.where(na * nb > 0, na * nb, torch.ones_like(na))
    corr = torch.where((na == 0) & (nb == 0), torch.ones_like(corr), corr)
    return corr.float().clamp(-1, 1)


def ssim(a: Tensor, b: Tensor, *, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-image mean SSIM of two (B, H, W) stacks in [0, 1], Gaussian window (Wang et al.)."""
    window = min(window, a.shape[-1], a.shape[-2])
    window -= 1 - window % 2  # odd
    offsets = torch.arange(window, dtype=torch.float32) - window // 2
    g = torch.exp(-0.5 * (offsets / sigma) ** 2)
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None]

    def smooth(t: Tensor) -> Tensor:
        return F.conv2d(t, kernel)

    x, y = a.float()[:, None], b.float()[:, None]
    mx, my = smooth(x), smooth(y)
    vx, vy, cxy = smooth(x * x) - mx ** 2, smooth(y * y) - my ** 2, smooth(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).clamp(-1, 1)
