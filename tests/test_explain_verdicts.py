"""The statistics behind the explanation verdicts: cascade order, paired verdicts, chance levels."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from xreport import discussion, explain, verdicts

SIZE = 16


# ---------------------------------------------------------------- toy models

def _checker(h: int, w: int) -> torch.Tensor:
    return ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2).float()


def _quadrant_images(n: int, seed: int = 0) -> torch.Tensor:
    """Noise everywhere, a checkerboard texture (the evidence) in the top-left quadrant."""
    x = torch.rand((n, 1, SIZE, SIZE), generator=torch.Generator().manual_seed(seed)) * 0.2
    x[:, :, : SIZE // 2, : SIZE // 2] += 0.4 + 0.4 * _checker(SIZE // 2, SIZE // 2)
    return x


def _evidence(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return 8 * (x[:, :, : h // 2, : w // 2] * _checker(h // 2, w // 2).to(x)).mean(dim=(1, 2, 3)) - 1


class Scramble(nn.Module):
    """A fixed random conv whose output goes through a fast sine: spatially random features
    that carry nothing about the evidence."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=torch.Generator().manual_seed(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(997.0 * self.conv(x))


class RandomMapNet(nn.Module):
    """Decides by the checker evidence; its CAM layer sees only scrambled noise, so every
    gradient CAM of it is a random map (the head leans on that layer only a little)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(Scramble())
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[0.0] * 4, [1e-3, 2e-3, -1e-3, 1.5e-3]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.fc(self.features(x).mean(dim=(2, 3)))
        return head + torch.stack([torch.zeros_like(x[:, 0, 0, 0]), _evidence(x)], dim=1)


class EvidenceNet(nn.Module):
    """Same decision, but through its CAM layer: that layer sees the checker texture of the
    top-left quadrant and nothing else, and the class-1 logit is 8 x its mean there - 1."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Identity(), nn.Conv2d(1, 4, 1))
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.features[1].weight.fill_(1.0)
            self.features[1].bias.zero_()
            self.fc.weight.copy_(torch.tensor([[0.0] * 4, [8.0] * 4]))  # 4 channels x 8 x quarter-image mean
            self.fc.bias.copy_(torch.tensor([0.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        quadrant = torch.zeros_like(x)
        quadrant[..., : h // 2, : w // 2] = _checker(h // 2, w // 2).to(x)
        return self.fc(self.features(x * quadrant).mean(dim=(2, 3)))


def _explain(model: nn.Module, target: nn.Module, n: int = 16) -> dict:
    x = _quadrant_images(n, seed=4)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1).numpy()
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    masks[:, : SIZE // 2, : SIZE // 2] = True
    summary, _ = explain.explain_split(
        model, x, y_true=np.ones(n, dtype=np.int64), probs=probs, class_names=["a", "b"],
        target_layer=target, layer_name="features", masks=masks, faithfulness_n=n, sanity_n=4,
        faithfulness_steps=5, random_per_image=2, sanity_seeds=2, seed=0, batch_size=64)
    return summary


# ---------------------------------------------------------------- cascade order

def test_cascade_resnet_with_the_target_at_layer4_goes_block_by_block() -> None:
    model = torchvision.models.resnet18(num_classes=2)
    assert explain.cascade_stages(model, model.layer4[-1]) == ["fc", "layer4.1", "layer4.0"]


def test_cascade_resnet_with_the_target_at_layer3_randomises_all_of_layer4_first() -> None:
    model = torchvision.models.resnet18(num_classes=2)
    assert explain.cascade_stages(model, model.layer3[-1]) == \
        ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0"]
    deep = torchvision.models.resnet50(num_classes=2)
    assert explain.cascade_stages(deep, deep.layer3[-1]) == \
        ["fc", "layer4.2", "layer4.1", "layer4.0"] + [f"layer3.{i}" for i in range(5, -1, -1)]


def test_cascade_densenet_goes_through_norm5_then_the_blocks() -> None:
    model = torchvision.models.densenet121(num_classes=2)
    assert explain.cascade_stages(model, model.features.norm5) == \
        ["classifier", "features.norm5", "features.denseblock4"]
    assert explain.cascade_stages(model, model.features.denseblock3) == \
        ["classifier", "features.norm5", "features.denseblock4", "features.transition3",
         "features.denseblock3"]


def test_cascade_is_cumulative_and_fresh_for_every_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    model = torchvision.models.resnet18(num_classes=2)
    reset: list[tuple[nn.Module, str]] = []  # holding the twins keeps them apart
    real = explain.sanity._reinitialise

    def first_weight(module: nn.Module) -> torch.Tensor:
        return next(iter(module.parameters()))

    def spy(twin: nn.Module, names: list[str], *, seed: int) -> None:
        # Every earlier stage of this seed's copy is still randomised when the next one starts.
        for earlier in [n for t, n in reset if t is twin]:
            assert not torch.equal(first_weight(twin.get_submodule(earlier)),
                                   first_weight(model.get_submodule(earlier)))
        reset.append((twin, names[0]))
        real(twin, names, seed=seed)

    monkeypatch.setattr(explain.sanity, "_reinitialise", spy)
    out = explain.sanity_check(model, torch.randn(2, 3, 32, 32), targets=torch.tensor([0, 1]),
                               method="gradcam", target_layer_fn=lambda m: m.layer4[-1], seeds=2)
    twins = [t for i, (t, _) in enumerate(reset) if all(t is not u for u, _ in reset[:i])]
    assert len(twins) == 2 and all(t is not model for t in twins)
    for twin in twins:
        assert [n for t, n in reset if t is twin] == ["fc", "layer4.1", "layer4.0"]
    assert [s["randomised"] for s in out["stages"]] == ["fc", "layer4.1", "layer4.0"]


# ---------------------------------------------------------------- verdict rules

def test_paired_verdicts_need_significance_direction_and_margin() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random(40)
    better = verdicts.paired(ref + 0.1 + rng.normal(0, 0.02, 40), ref, higher_is_better=True, margin=0.02)
    assert better["verdict"] == "better" and better["ci95"][0] > 0 and better["p_value"] < 0.05
    assert better["n"] == 40 and better["difference"] == pytest.approx(0.1, abs=0.01)
    # Lower is better (deletion): the same numbers are a loss.
    assert verdicts.paired(ref + 0.1, ref, higher_is_better=False, margin=0.02)["verdict"] == "worse"
    # Consistent but tiny (0.432 vs 0.434): significant, yet below the margin.
    tiny = verdicts.paired(ref - 0.002 + rng.normal(0, 1e-4, 40), ref, higher_is_better=False, margin=0.02)
    assert tiny["p_value"] < 0.05 and tiny["verdict"] == "below_margin"
    # Noise around zero.
    noise = verdicts.paired(ref + rng.normal(0, 0.1, 40), ref, higher_is_better=True, margin=0.02)
    assert noise["verdict"] == "not_distinguishable"
    # Too few images to say anything.
    assert verdicts.paired([0.9], [0.1], higher_is_better=True, margin=0.02)["verdict"] == "not_distinguishable"
    assert verdicts.paired([0.9] * 5, [0.1] * 5, higher_is_better=True, margin=0.02)["p_value"] > 0.05


def test_hit_rates_are_tested_on_their_mean_not_their_median() -> None:
    # 20 of 60 peaks in a lesion whose dilated share is 4%: far above chance, yet most images
    # miss, so the median difference is negative and Wilcoxon's p is large.
    hits = np.array([1.0] * 20 + [0.0] * 40)
    chance = np.full(60, 0.04)
    assert verdicts.wilcoxon_p(hits - chance) > 0.05
    stat = verdicts.paired(hits, chance, higher_is_better=True, margin=0.05, test="sign_flip")
    assert stat["p_value"] < 0.001 and stat["test"] == "sign_flip" and stat["verdict"] == "better"
    at_chance = np.array([1.0] * 2 + [0.0] * 58)
    assert verdicts.paired(at_chance, chance, higher_is_better=True, margin=0.05,
                           test="sign_flip")["verdict"] == "not_distinguishable"
    with pytest.raises(ValueError, match="sign_flip"):
        verdicts.paired(hits, chance, higher_is_better=True, margin=0.05, test="t")


def test_overall_and_similarity_rules() -> None:
    assert verdicts.overall(["better", "better"]) == "better"
    assert verdicts.overall(["better", "worse"]) == "mixed"
    assert verdicts.overall(["worse", "not_distinguishable"]) == "mixed"
    assert verdicts.overall(["worse", "worse"]) == "worse"
    assert verdicts.overall([]) == "not_distinguishable"
    assert verdicts.below_limit([0.1, 0.2, 0.15, 0.12], limit=0.5)["verdict"] == "pass"
    assert verdicts.below_limit([0.9, 0.95, 0.85, 0.92], limit=0.5)["verdict"] == "fail"
    assert verdicts.below_limit([0.1, 0.9, 0.2, 0.95], limit=0.5)["verdict"] == "inconclusive"


def test_a_map_of_the_evidence_is_better_on_every_score() -> None:
    model = EvidenceNet()
    summary = _explain(model, model.features[-1])
    faith = summary["faithfulness"]
    assert faith["n"] == 16
    for score in explain.FAITH_SCORES:
        assert faith[score]["verdict"] == "better", (score, faith[score])
        assert faith[score]["n"] == 16 and faith[score]["ci95"] is not None
    assert faith["verdict"] == "better"
    assert summary["localisation"]["pointing_game"]["verdict"] == "better"
    json.dumps(summary, allow_nan=False)
    said = [i["key"] for i in discussion.observations(None, explain=summary)]
    assert "discussion.cam_faithful" in said and "discussion.cam_not_distinguishable" not in said


def test_a_model_whose_maps_are_random_is_reported_as_such() -> None:
    model = RandomMapNet()
    summary = _explain(model, model.features[0])
    faith = summary["faithfulness"]
    assert faith["verdict"] == "not_distinguishable", {s: faith[s] for s in explain.FAITH_SCORES}
    said = [i["key"] for i in discussion.observations(None, explain=summary)]
    assert "discussion.cam_not_distinguishable" in said
    assert "discussion.cam_faithful" not in said


# ---------------------------------------------------------------- chance levels and imputation

def test_localisation_chance_is_the_mask_share_and_random_maps_approach_it() -> None:
    masks = torch.zeros(400, 32, 32, dtype=torch.bool)
    masks[:, 4:12, 20:28] = True  # 64 px; dilated by 1: 100 px
    out = explain.localisation(torch.rand(400, 32, 32), masks, tolerance=1, random_per_image=4)
    assert out["pointing_game"]["chance"] == pytest.approx(100 / 1024)
    assert out["energy_inside"]["chance"] == pytest.approx(64 / 1024)
    # Random maps are made so that their peak can fall anywhere: close to the analytic chance.
    assert out["pointing_game"]["random"] == pytest.approx(100 / 1024, abs=0.04)
    assert out["energy_inside"]["random"] == pytest.approx(64 / 1024, abs=0.02)


def test_random_map_peaks_can_fall_on_most_pixels() -> None:
    peaks = explain.random_maps(3000, 32, 32, seed=1).flatten(1).argmax(1)
    assert peaks.unique().numel() > 600  # an unshifted 7x7 grid reaches ~160 of 1,024


def test_road_imputation_solves_the_neighbour_mean_system() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 12, 12)
    removed = torch.zeros(2, 1, 12, 12)
    removed[0, :, 3:9, 2:10] = 1
    removed[1, :, ::2, :] = 1
    out = explain.noisy_linear_impute(x, removed, noise=0.0, tol=1e-7)
    kept = removed.expand_as(x) == 0
    assert torch.equal(out[kept], x[kept])
    w = torch.tensor(explain.imputation._NEIGHBOUR_WEIGHTS).expand(3, 1, 3, 3)
    num = torch.nn.functional.conv2d(out, w, padding=1, groups=3)
    den = torch.nn.functional.conv2d(torch.ones_like(out), w, padding=1, groups=3)
    holes = ~kept
    torch.testing.assert_close(out[holes], (num / den)[holes], atol=1e-4, rtol=0)
    noisy = explain.noisy_linear_impute(x, removed, noise=0.01, generator=torch.Generator().manual_seed(0))
    assert 0 < (noisy - out)[holes].std() < 0.02


def _cg_impute_before(x: torch.Tensor, removed: torch.Tensor, tol: float) -> torch.Tensor:
    """The imputation as it was solved before multigrid (plain CG from a blurred start, up to
    4 max(H, W) iterations): one copy, kept in bench/build_growth.py as its timing baseline."""
    import importlib
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parents[1] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)   # build_growth imports its sibling `common`
    return importlib.import_module("build_growth").previous_cg_impute(x, removed, tol=tol)


def _removal_masks(n: int, size: int) -> torch.Tensor:
    """Blob-like removals as faithfulness makes them: the top 10-90% of random maps."""
    ranks = explain.removal._pixel_ranks(explain.random_maps(n, size, size, seed=5), seed=0)
    share = torch.linspace(0.1, 0.9, n)[:, None]
    return (ranks < (share * size * size).round()).float().view(n, 1, size, size)


@pytest.mark.parametrize("size", [24, 40, 57])
def test_multigrid_imputation_equals_the_reference_and_the_previous_solver(size: int) -> None:
    """Stated tolerance: at the default IMPUTE_TOL the filled pixels are within 5e-3 (images of
    range ~6; half ROAD's noise sd) of pytorch_grad_cam's NoisyLinearImputer (an exact
    spsolve of the same system) and of the previous CG solver run to convergence."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    n = 6
    x = explain.gaussian_blur(torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(size)),
                              sigma=1.5) * 4
    removed = _removal_masks(n, size)
    new = explain.noisy_linear_impute(x, removed, noise=0.0)
    reference = torch.stack([NoisyLinearImputer(noise=0.0)(x[i], 1 - removed[i, 0]) for i in range(n)])
    before = _cg_impute_before(x, removed, tol=1e-7)
    assert torch.equal(new[removed.expand_as(x) == 0], x[removed.expand_as(x) == 0])
    torch.testing.assert_close(new, reference, atol=5e-3, rtol=0)
    torch.testing.assert_close(new, before, atol=5e-3, rtol=0)
    # Tighter tolerance, tighter match: it is the same system, not an approximation of it.
    torch.testing.assert_close(explain.noisy_linear_impute(x, removed, noise=0.0, tol=1e-5), reference,
                               atol=5e-4, rtol=0)


def test_multigrid_imputation_iterations_do_not_grow_with_the_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the multigrid: as many V-cycles at 96 px as at 24 px (plain CG needs ~4x)."""
    calls: dict[int, int] = {}
    original = explain.imputation._v_cycle

    def counted(r: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        calls[r.shape[-1]] = calls.get(r.shape[-1], 0) + 1
        return original(r, u)

    monkeypatch.setattr(explain.imputation, "_v_cycle", counted)
    for size in (24, 96):
        x = explain.gaussian_blur(torch.randn((4, 1, size, size), generator=torch.Generator().manual_seed(1)),
                                  sigma=1.5)
        explain.noisy_linear_impute(x, _removal_masks(4, size), noise=0.0)
    assert calls[96] <= calls[24] + 4, calls


def test_multigrid_imputation_in_small_solves_equals_one_solve_and_runs_on_one_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The systems are solved a few at a time (cache-sized, each solve stops at its own slowest
    system), on one CPU thread, restored after: the same answer as one solve of them all."""
    size, n = 32, 6
    x = explain.gaussian_blur(torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(3)),
                              sigma=1.5) * 4
    removed = _removal_masks(n, size)
    whole = explain.noisy_linear_impute(x, removed, noise=0.0)
    threads_seen: list[int] = []
    original = explain.imputation._multigrid_cg

    def solve(flat: torch.Tensor, u: torch.Tensor, *, tol: float) -> torch.Tensor:
        threads_seen.append(torch.get_num_threads())
        return original(flat, u, tol=tol)

    monkeypatch.setattr(explain.imputation, "_multigrid_cg", solve)
    monkeypatch.setattr(explain.imputation, "_SOLVE_VALUES", 4 * size * size)  # 4 systems a solve
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pieces = explain.noisy_linear_impute(x, removed, noise=0.0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert threads_seen == [1] * 5          # 18 systems (6 images x 3 channels), 4 at a time
    torch.testing.assert_close(pieces, whole, atol=5e-3, rtol=0)


# ---------------------------------------------------------------- figures

def _key(text: str) -> str:
    return f"<<{text}>>"


def test_sanity_chart_plots_every_stage_with_translated_labels() -> None:
    from xreport import charts

    model = torchvision.models.resnet18(num_classes=2)
    out = explain.sanity_check(model, torch.randn(3, 3, 32, 32), targets=torch.tensor([0, 1, 0]),
                               method="gradcam", target_layer_fn=lambda m: m.layer4[-1], seeds=2)
    fig = charts.sanity_similarity(out, t=_key)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["<<chart.sanity.trained>>", "fc", "layer4.1", "layer4.0"]
    assert ax.get_ylabel() == "<<chart.sanity.ylabel>>" and ax.get_title() == "<<chart.sanity.title>>"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["<<chart.sanity.limit>>", "<<chart.sanity.spearman>>", "<<chart.sanity.ssim>>"]


def test_faithfulness_chart_shows_road_and_the_interval_with_n() -> None:
    from xreport import charts

    model = EvidenceNet()
    x = _quadrant_images(8)
    cams = explain.compute_cams(model, x, target_layer=model.features[-1], targets=torch.ones(8, dtype=torch.long))
    faith = explain.faithfulness(model, x, cams, targets=torch.ones(8, dtype=torch.long), steps=4,
                                 random_per_image=2)
    fig = charts.faithfulness_curves(faith, t=_key)
    assert len(fig.axes) == 3 and fig.axes[2].get_title() == "<<chart.faith.road_title>>"
    boxes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(boxes) == 3 and all("n = 8" in b and "[" in b for b in boxes)
    lo, hi = faith["deletion_auc"]["ci95"]
    assert f"[{lo:.3f}, {hi:.3f}]" in boxes[0]


# ---------------------------------------------------------------- a trained model

@pytest.mark.slow
def test_verdicts_on_a_trained_fixture_model_and_what_the_discussion_says() -> None:
    from pathlib import Path

    from xreport import runs
    from xreport.data import normalize_batch
    from xreport.evaluate import EXPLAIN_PROTOCOL, dataset_for_run, load_run, predict
    from xreport.models import cam_target_layer

    fixtures = Path(__file__).resolve().parent / "fixtures" / "checkpoints"
    paths = runs.RunPaths("fixture_binary", checkpoints_root=fixtures)
    run = load_run(paths, device=torch.device("cpu"))
    test = dataset_for_run(run, splits=["test"]).splits["test"]
    probs = predict(run.model, test.images, mean=run.meta["mean"], std=run.meta["std"],
                    device=torch.device("cpu"), batch_size=256, progress=False)
    layer, name = cam_target_layer(run.model, input_size=32, in_channels=1)
    x = normalize_batch(test.images, run.meta["mean"], run.meta["std"])
    summary, _ = explain.explain_split(
        run.model, x, y_true=test.labels.numpy(), probs=probs, class_names=run.meta["class_names"],
        target_layer=layer, layer_name=name, masks=test.masks, seed=0, batch_size=128, **EXPLAIN_PROTOCOL)
    faith, sanity = summary["faithfulness"], summary["sanity"]
    assert faith["n"] == 64 and sanity["n"] == 16 and sanity["seeds"] == 3
    # The trained model's maps: ROAD removes its evidence faster than random maps do, and the
    # cascade (fc, then each stage's block down to the target's) leaves nothing of the maps.
    assert sanity["layers_randomised"] == ["fc", "layer4.0", "layer3.0"]
    assert faith["road_morf"]["verdict"] == "better" and faith["road_morf"]["p_value"] < 1e-4
    assert sanity["verdict"] == "pass"
    said = {i["key"] for i in discussion.observations(None, explain=summary)}
    topic = {"better": "discussion.cam_faithful", "not_distinguishable": "discussion.cam_not_distinguishable",
             "below_margin": "discussion.cam_below_margin", "mixed": "discussion.cam_mixed",
             "worse": "discussion.cam_worse"}[faith["verdict"]]
    assert topic in said and "discussion.sanity_passed" in said
    # Phantom lesions are small: chance (the dilated lesion's share) is a few percent, and the
    # random maps, whose peaks can fall anywhere, land near it.
    hits = summary["localisation"]["pointing_game"]
    assert 0 < hits["chance"] < 0.2 and abs(hits["random"] - hits["chance"]) < 0.1


def test_a_cached_evaluation_counts_only_for_the_protocol_its_checks_ran() -> None:
    """build reuses metrics.json only when its recorded settings are the asked protocol's
    (files from before the choice carry no name, so the settings decide)."""
    from xreport.evaluate import EXPLAIN_PROTOCOLS, protocol_matches

    def made(protocol: str) -> dict:
        p = EXPLAIN_PROTOCOLS[protocol]
        return {"faithfulness": {"steps": p["faithfulness_steps"], "random_maps": {"per_image": p["random_per_image"]}},
                "sanity": {"seeds": p["sanity_seeds"]}}

    assert protocol_matches(made("fast"), "fast") and not protocol_matches(made("fast"), "full")
    assert protocol_matches(made("full"), "full") and not protocol_matches(made("full"), "fast")
    assert not protocol_matches({"faithfulness": None, "sanity": None}, "fast")
