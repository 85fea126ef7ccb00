"""CAMs, gallery, faithfulness, sanity check and localisation (xreport/explain/)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam import (GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM,
                              XGradCAM)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from xreport import explain
from xreport.errors import ConfigError, ReportError

SIZE = 32


class QuadrantMask(nn.Module):
    """Zeroes every feature outside the top-left quadrant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x)
        mask[..., : x.shape[-2] // 2, : x.shape[-1] // 2] = 1
        return x * mask


class RegionNet(nn.Module):
    """A tiny CNN that sees only the top-left quadrant; positive weights make every class
    rise with the activity there, so every CAM method must point at that quadrant."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), QuadrantMask())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for module in (self.features[0], self.features[2], self.fc):
                module.weight.copy_(torch.rand(module.weight.shape, generator=gen) * 0.5 + 0.05)
                module.bias.fill_(0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class QuadrantLogit(nn.Module):
    """No parameters: the class-1 logit is four times the mean of the top-left quadrant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = x[:, :, : h // 2, : w // 2].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(s), 4 * s], dim=1)


class CheckerLogit(nn.Module):
    """No parameters: the class-1 logit measures a fine checkerboard texture in the top-left
    quadrant, so both a blurred and a mean baseline erase the evidence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        checker = _checker(h // 2, w // 2).to(x)
        s = (x[:, :, : h // 2, : w // 2] * checker).mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(s), 8 * s - 1], dim=1)


def _checker(h: int, w: int) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((rows + cols) % 2 * 2 - 1).float()


def _images(n: int = 4, channels: int = 1, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, channels, size, size), generator=torch.Generator().manual_seed(seed))


def _quadrant_share(cams: torch.Tensor) -> torch.Tensor:
    h, w = cams.shape[-2:]
    # One pixel of slack: the bilinear upsampling bleeds across the quadrant's edge.
    return cams[:, : h // 2 + 1, : w // 2 + 1].sum(dim=(1, 2)) / cams.sum(dim=(1, 2))


# ---------------------------------------------------------------- CAMs

@pytest.mark.parametrize("method", explain.cam_methods())
def test_every_method_points_at_the_only_region_the_model_sees(method: str) -> None:
    model = RegionNet()
    x = _images(4)
    cams = explain.compute_cams(model, x, target_layer=model.features[-1],
                                targets=torch.tensor([0, 1, 1, 0]), method=method, batch_size=3)
    assert cams.shape == (4, SIZE, SIZE) and cams.dtype == torch.float32
    assert not torch.isnan(cams).any()
    assert cams.min() >= 0 and cams.max() <= 1
    assert torch.allclose(cams.amax(dim=(1, 2)), torch.ones(4))
    assert (_quadrant_share(cams) > 0.95).all(), _quadrant_share(cams)
    peak = cams.flatten(1).argmax(1)
    rows, cols = peak // SIZE, peak % SIZE
    assert (rows < SIZE // 2).all() and (cols < SIZE // 2).all()


@pytest.mark.parametrize("method", explain.cam_methods())
def test_a_model_blind_to_its_input_gives_zero_maps_without_nan(method: str) -> None:
    model = RegionNet()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    cams = explain.compute_cams(model, _images(3), target_layer=model.features[-1],
                                targets=torch.tensor([0, 1, 0]), method=method)
    assert cams.shape == (3, SIZE, SIZE)
    assert not torch.isnan(cams).any()
    assert (cams == 0).all()


def test_three_channel_inputs_and_empty_batch() -> None:
    model = RegionNet(in_channels=3, num_classes=3)
    cams = explain.compute_cams(model, _images(2, channels=3, size=28), target_layer=model.features[-1],
                                targets=torch.tensor([2, 0]))
    assert cams.shape == (2, 28, 28)
    empty = explain.compute_cams(model, _images(0, channels=3), target_layer=model.features[-1],
                                 targets=torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0, SIZE, SIZE)


def test_model_state_is_restored() -> None:
    model = RegionNet()
    model.train()
    model.features[0].weight.requires_grad_(False)
    before = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    explain.compute_cams(model, _images(2), target_layer=model.features[-1], targets=torch.tensor([1, 1]))
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == before
    assert all(p.grad is None and p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not model.features[-1]._forward_hooks  # the hook is removed


def test_bad_method_and_targets_are_clear_errors() -> None:
    model = RegionNet()
    with pytest.raises(ConfigError, match="not one of"):
        explain.compute_cams(model, _images(1), target_layer=model.features[-1],
                             targets=torch.tensor([0]), method="gradcam+++")
    with pytest.raises(ReportError, match="out of range"):
        explain.compute_cams(model, _images(1), target_layer=model.features[-1], targets=torch.tensor([5]))
    with pytest.raises(ReportError, match="targets must have shape"):
        explain.compute_cams(model, _images(2), target_layer=model.features[-1], targets=torch.tensor([0]))


def test_method_cam_without_a_linear_classifier_names_the_methods_that_need_none() -> None:
    # The hooks find no classifier; method 'cam' (beside the registry) says what to choose instead.
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ReportError, match=r"^Sequential has no Linear classifier; method 'cam' needs one "
                                          r"\(choose one of gradcam, .*\)$"):
        explain.compute_cams(model, _images(1), target_layer=model[0], targets=torch.tensor([0]), method="cam")


LIBRARY = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM,
           "xgradcam": XGradCAM, "layercam": LayerCAM}


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3).eval()


@pytest.mark.parametrize("method", sorted(LIBRARY))
def test_batched_methods_equal_pytorch_grad_cam_on_resnet18(method: str, resnet18: nn.Module) -> None:
    model = resnet18
    x = torch.randn((3, 3, 64, 64), generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 2, 1])
    with LIBRARY[method](model, [model.layer4[-1]]) as cam:
        ref = cam(x, [ClassifierOutputTarget(int(t)) for t in targets])
    ours = explain.compute_cams(model, x, target_layer=model.layer4[-1], targets=targets,
                                method=method, batch_size=2)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)


def test_gradcam_equals_pytorch_grad_cam_on_densenet() -> None:
    # DenseNet's in-place relu after norm5 is the tricky case for a hooked leaf. A narrow,
    # shallow torchvision DenseNet runs the same forward as DenseNet-121, in a fraction of the time.
    torch.manual_seed(0)
    model = torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2),
                                        num_init_features=16, num_classes=2).eval()
    x = torch.randn(2, 3, 64, 64)
    targets = torch.tensor([1, 0])
    with GradCAM(model, [model.features.norm5]) as cam:
        ref = cam(x, [ClassifierOutputTarget(int(t)) for t in targets])
    ours = explain.compute_cams(model, x, target_layer=model.features.norm5, targets=targets)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)


def test_scorecam_equals_pytorch_grad_cam() -> None:
    torch.manual_seed(0)
    model = RegionNet(num_classes=3)
    nn.init.normal_(model.fc.weight)  # signed weights, so channels compete
    x = _images(2)
    targets = torch.tensor([2, 1])
    cam = ScoreCAM(model, [model.features[2]])
    ref = cam(x, [ClassifierOutputTarget(int(t)) for t in targets])
    cam.activations_and_grads.release()
    ours = explain.compute_cams(model, x, target_layer=model.features[2], targets=targets,
                                method="scorecam", batch_size=5)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)


def test_fc_weight_cam_is_the_classifier_weighted_feature_sum() -> None:
    model = RegionNet(num_classes=3)
    nn.init.normal_(model.fc.weight, generator=torch.Generator().manual_seed(1))
    x = _images(2)
    with torch.no_grad():
        feats = model.features(x)
    raw = torch.einsum("bc,bchw->bhw", model.fc.weight[[2, 0]], feats).clamp(min=0)
    expected = explain.cams._normalise_maps(raw, (SIZE, SIZE))
    ours = explain.compute_cams(model, x, target_layer=model.features[-1],
                                targets=torch.tensor([2, 0]), method="cam")
    torch.testing.assert_close(ours, expected)


# ---------------------------------------------------------------- gallery

def test_gallery_binary_kinds_order_and_probabilities() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    p1 = np.array([0.95, 0.70, 0.20, 0.10, 0.30, 0.80, 0.45, 0.99])
    probs = np.stack([1 - p1, p1], axis=1)
    gallery = explain.select_gallery(y, probs, class_names=["NORMAL", "PNEUMONIA"], per_kind=2)
    by_kind = {k: [g["index"] for g in gallery if g["kind"] == k] for k in explain.KINDS}
    assert by_kind == {"TP": [0, 1], "TN": [3, 4], "FP": [7, 5], "FN": [2, 6]}
    assert {g["class"] for g in gallery} == {"PNEUMONIA"}
    assert all(g["class_index"] == 1 for g in gallery)
    assert all(g["prob"] == pytest.approx(p1[g["index"]]) for g in gallery)
    assert [g["kind"] for g in gallery] == ["TP", "TP", "TN", "TN", "FP", "FP", "FN", "FN"]


def test_gallery_multiclass_is_one_vs_rest_and_empty_kinds_are_absent() -> None:
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7], [0.6, 0.3, 0.1]])
    gallery = explain.select_gallery(y, probs, class_names=["a", "b", "c"], per_kind=5)
    kinds = {(g["class_index"], g["kind"]) for g in gallery}
    assert (0, "FP") in kinds and (2, "FN") in kinds  # row 3: a 2 called 0
    assert (1, "FP") not in kinds and (1, "FN") not in kinds
    # Rows 1 and 2 are already shown as true positives of b and c: class a's true negatives
    # fall back to the most confident of them (p0 0.1 before 0.2), marked as repeated.
    tn0 = [(g["index"], g["repeated"]) for g in gallery if g["class_index"] == 0 and g["kind"] == "TN"]
    assert tn0 == [(1, True)]
    # Row 3 (a 2 called 0) is c's false negative first, then a's false positive, repeated.
    errors = {(g["class_index"], g["kind"]): (g["index"], g["repeated"]) for g in gallery
              if g["kind"] in ("FP", "FN")}
    assert errors == {(2, "FN"): (3, False), (0, "FP"): (3, True)}
    assert len(gallery) == len({(g["class_index"], g["kind"], g["index"]) for g in gallery})


def test_gallery_rule_each_panel_explains_its_class_errors_show_true_and_predicted() -> None:
    rng = np.random.default_rng(3)
    n, k = 60, 5
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 1.5 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = [f"class {i}" for i in range(k)]
    gallery = explain.select_gallery(y, probs, class_names=names)
    assert gallery and all(sum(1 for g in gallery if g["class_index"] == c and g["kind"] == kind) <= 1
                           for c in range(k) for kind in explain.KINDS)  # 5 classes: one per kind
    seen: set[int] = set()
    for g in gallery:
        row, c = g["index"], g["class_index"]
        true, pred = int(y[row]), int(probs[row].argmax())
        assert (g["true_index"], g["pred_index"]) == (true, pred)
        assert (g["true"], g["pred"]) == (names[true], names[pred])
        assert g["prob_true"] == pytest.approx(probs[row, true])
        assert g["prob_pred"] == pytest.approx(probs[row, pred])
        assert c in g["targets"]  # the panel's own class is always explained
        if true != pred:
            assert g["targets"][-2:] == [true, pred]  # true beside predicted, in that order
        else:
            assert g["targets"] == list(dict.fromkeys([c, true]))
        assert g["repeated"] == (row in seen)  # an image is shown once, or marked
        seen.add(row)
    assert any(g["kind"] in ("FP", "FN") for g in gallery)


def test_gallery_targets() -> None:
    assert explain.gallery_targets(1, 1, 1) == [1]           # TP
    assert explain.gallery_targets(1, 0, 0) == [1, 0]        # TN: own class, then the true one
    assert explain.gallery_targets(1, 1, 0) == [1, 0]        # FN: true, predicted
    assert explain.gallery_targets(1, 0, 1) == [0, 1]        # FP: true, predicted
    assert explain.gallery_targets(2, 0, 1) == [2, 0, 1]     # a TN of 2 that is an error elsewhere
    assert explain.gallery_per_kind(2) == 2 and explain.gallery_per_kind(12) == 1


def test_padding_is_left_out_of_gallery_maps() -> None:
    image = np.zeros((3, 10, 10), dtype=np.uint8)
    image[:, 3:7, :] = 120  # a wide image padded above and below
    content = explain.content_mask(image)
    assert content[3:7].all() and not content[:3].any() and not content[7:].any()
    cam = np.zeros((10, 10), dtype=np.float32)
    cam[0, :] = 1.0          # the map's peak on the padding
    cam[4, 2] = 0.4
    shown = explain.without_padding(cam, content)
    assert shown[:3].max() == 0.0 and shown[4, 2] == pytest.approx(1.0)
    assert explain.without_padding(cam, np.ones((10, 10), dtype=bool)) is not None


def test_gallery_ties_follow_the_seed_and_are_deterministic() -> None:
    y = np.ones(20, dtype=int)
    probs = np.tile([0.1, 0.9], (20, 1))  # 20 tied true positives
    pick = {s: [g["index"] for g in explain.select_gallery(y, probs, class_names=["n", "p"], seed=s)]
            for s in range(6)}
    assert pick[0] == [g["index"] for g in explain.select_gallery(y, probs, class_names=["n", "p"], seed=0)]
    assert len({tuple(v) for v in pick.values()}) > 1


def test_gallery_rejects_mismatched_inputs() -> None:
    with pytest.raises(ReportError, match="class names"):
        explain.select_gallery([0, 1], np.array([[0.5, 0.5], [0.2, 0.8]]), class_names=["a", "b", "c"])


# ---------------------------------------------------------------- faithfulness

def _textured_quadrant_images(n: int = 6) -> torch.Tensor:
    x = _images(n, size=SIZE) * 0.2
    x[:, :, : SIZE // 2, : SIZE // 2] += 0.4 + 0.4 * _checker(SIZE // 2, SIZE // 2)
    return x


def _quadrant_map(n: int, *, top_left: bool = True) -> torch.Tensor:
    maps = torch.zeros(n, SIZE, SIZE)
    if top_left:
        maps[:, : SIZE // 2, : SIZE // 2] = 1
    else:
        maps[:, SIZE // 2:, SIZE // 2:] = 1
    return maps


@pytest.mark.parametrize("baseline", explain.BASELINES)
def test_a_map_of_the_evidence_beats_random_maps(baseline: str) -> None:
    model = CheckerLogit()
    x = _textured_quadrant_images()
    targets = torch.ones(6, dtype=torch.long)
    good = explain.faithfulness(model, x, _quadrant_map(6), targets=targets, steps=8,
                                baseline=baseline, batch_size=16)
    assert good["n"] == 6 and good["steps"] == 8
    assert good["deletion_auc"]["cam"] < good["deletion_auc"]["random"] - 0.1
    assert good["insertion_auc"]["cam"] > good["insertion_auc"]["random"] + 0.1
    for kind in ("deletion_curve", "insertion_curve"):
        assert all(len(good[kind][m]) == 9 for m in ("cam", "random"))
    # Both curves start/end at the untouched image and at the baseline image.
    assert good["deletion_curve"]["cam"][0] == pytest.approx(good["insertion_curve"]["cam"][-1])
    assert good["deletion_curve"]["cam"][-1] == pytest.approx(good["insertion_curve"]["random"][0])
    bad = explain.faithfulness(model, x, _quadrant_map(6, top_left=False), targets=targets, steps=8,
                               baseline=baseline)
    assert bad["deletion_auc"]["cam"] > good["deletion_auc"]["cam"]
    json.dumps(good, allow_nan=False)


def test_the_random_reference_reads_lerf_and_insertion_off_its_morf_and_deletion_curves() -> None:
    # A random map has no order (1 - map has the same law), so the reference's LeRF curve is
    # its MoRF curve and its insertion curve the deletion curve read backwards. Computed
    # directly on many random maps, the mirrored curves agree with them within sampling error.
    from xreport.explain import removal

    model, x = CheckerLogit(), _textured_quadrant_images(4)
    targets = torch.ones(4, dtype=torch.long)
    k, steps = 48, 6
    rows = torch.arange(4).repeat_interleave(k)
    ranks = removal._pixel_ranks(explain.random_maps(4 * k, SIZE, SIZE, seed=9), seed=0)
    base = removal._baseline_images(x, "blur")
    common = dict(rows=rows, steps=steps, batch_size=64, device=torch.device("cpu"), seed=0)
    direct = removal._curves(model, x, base, ranks, targets, **common)
    mirrored = removal._mirrored_random_curves(
        removal._curves(model, x, base, ranks, targets, kinds=removal._RANDOM_CURVES, **common))
    for kind in ("insertion", "road_lerf"):
        a, b = direct[kind].mean(0), mirrored[kind].mean(0)
        se = ((direct[kind].var(0) + mirrored[kind].var(0)) / direct[kind].shape[0]).sqrt()
        assert torch.all((a - b).abs() <= 4 * se + 0.02), (kind, a, b)
    assert not torch.allclose(mirrored["insertion"], mirrored["insertion"].flip(1))  # not trivially symmetric


def test_faithfulness_sends_the_random_reference_through_the_model_for_two_curves_only() -> None:
    class Counting(CheckerLogit):
        seen = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Counting.seen += x.shape[0]
            return super().forward(x)

    model, x = Counting(), _textured_quadrant_images(3)
    out = explain.faithfulness(model, x, _quadrant_map(3), targets=torch.ones(3, dtype=torch.long),
                               steps=5, random_per_image=2, batch_size=16)
    inner = 4
    # both ends (2 per image), the CAM's four curves, the random maps' deletion and MoRF
    assert Counting.seen == 3 * (2 + 4 * inner + 2 * 2 * inner)
    assert out["road_lerf_curve"]["random"] == out["road_morf_curve"]["random"]
    assert out["insertion_curve"]["random"][1:-1] == out["deletion_curve"]["random"][1:-1][::-1]


def test_faithfulness_auc_matches_the_trapezoid_of_a_known_curve() -> None:
    # The probability falls linearly as the top-left quadrant is deleted pixel by pixel.
    model = QuadrantLogit()
    x = torch.zeros(1, 1, SIZE, SIZE)
    x[:, :, : SIZE // 2, : SIZE // 2] = 1.0
    out = explain.faithfulness(model, x, _quadrant_map(1), targets=torch.tensor([1]), steps=4,
                               baseline="mean")
    expected = [torch.sigmoid(torch.tensor(4.0 * v)).item() for v in (1, 0.25, 0.25, 0.25, 0.25)]
    np.testing.assert_allclose(out["deletion_curve"]["cam"], expected, atol=1e-5)
    trapezoid = (sum(expected) - (expected[0] + expected[-1]) / 2) / 4
    assert out["deletion_auc"]["cam"] == pytest.approx(trapezoid, abs=1e-5)


def test_faithfulness_is_seeded_and_checks_its_options() -> None:
    model, x = CheckerLogit(), _textured_quadrant_images(3)
    t = torch.ones(3, dtype=torch.long)
    maps = explain.random_maps(3, SIZE, SIZE, seed=5)
    a = explain.faithfulness(model, x, maps, targets=t, seed=1)
    assert a == explain.faithfulness(model, x, maps, targets=t, seed=1)
    b = explain.faithfulness(model, x, maps, targets=t, seed=2)
    assert a["deletion_auc"]["random"] != b["deletion_auc"]["random"]
    with pytest.raises(ConfigError, match="blur, mean"):
        explain.faithfulness(model, x, maps, targets=t, baseline="zeros")


def test_random_maps_are_blob_like_and_normalised() -> None:
    maps = explain.random_maps(4, 28, 28, seed=0)
    assert maps.shape == (4, 28, 28) and maps.min() == 0 and maps.max() == 1
    assert torch.equal(maps, explain.random_maps(4, 28, 28, seed=0))
    # Neighbouring pixels are close: smooth blobs, not per-pixel noise.
    assert (maps[:, :, 1:] - maps[:, :, :-1]).abs().mean() < 0.1


# ---------------------------------------------------------------- sanity check

def test_similarity_measures() -> None:
    maps = explain.random_maps(3, SIZE, SIZE, seed=0)
    assert torch.allclose(explain.spearman(maps, maps), torch.ones(3))
    assert torch.allclose(explain.ssim(maps, maps), torch.ones(3))
    assert (explain.spearman(maps, 1 - maps) < -0.99).all()
    assert (explain.ssim(maps, 1 - maps) < 0.5).all()
    flat = torch.zeros_like(maps)
    assert torch.equal(explain.spearman(maps, flat), torch.zeros(3))
    assert torch.equal(explain.spearman(flat, flat), torch.ones(3))


def test_sanity_check_resnet_one_entry_per_stage_and_original_untouched(resnet18: nn.Module) -> None:
    model = resnet18
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn((3, 3, 64, 64), generator=torch.Generator().manual_seed(2))
    out = explain.sanity_check(model, x, targets=torch.tensor([0, 2, 1]), method="gradcam",
                               target_layer_fn=lambda m: (m.layer4[-1], "layer4"), seed=0, seeds=2)
    assert out["n"] == 3 and out["seeds"] == 2
    assert [s["randomised"] for s in out["stages"]] == ["fc", "layer4.1", "layer4.0"]
    for stage in out["stages"]:
        for key in ("spearman", "ssim"):
            assert -1 <= stage[key]["mean"] <= 1 and len(stage[key]["per_seed"]) == 2
            assert stage[key]["sd_seeds"] >= 0 and stage[key]["n"] == 3
        assert stage["verdict"] in ("pass", "inconclusive", "fail")
    assert out["verdict"] == out["stages"][-1]["verdict"]
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_sanity_check_flags_a_class_agnostic_method() -> None:
    # EigenCAM ignores the classifier: randomising it leaves the maps identical (a fail of
    # the check, as Adebayo et al. would call it); randomising the last block changes them.
    model = RegionNet(num_classes=2)
    out = explain.sanity_check(model, _images(4, seed=3), targets=torch.tensor([0, 1, 0, 1]),
                               method="eigencam", target_layer_fn=lambda m: m.features[-1], seed=0)
    assert [s["randomised"] for s in out["stages"]] == ["fc", "features.2"]
    fc, block = out["stages"]
    assert fc["spearman"]["mean"] == pytest.approx(1.0) and fc["ssim"]["mean"] == pytest.approx(1.0)
    assert fc["spearman"]["sd_seeds"] == pytest.approx(0.0, abs=1e-6) and fc["verdict"] == "fail"
    assert block["spearman"]["mean"] < 0.999 and block["ssim"]["mean"] < 0.99




# ---------------------------------------------------------------- localisation

def test_localisation_on_hand_made_masks() -> None:
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, 2:4, 2:4] = True
    masks[1, 5:7, 5:7] = True        # image 2 has no lesion: it must not count
    cams = torch.zeros(3, 8, 8)
    cams[0, 3, 3] = 1.0              # peak inside, all energy inside
    cams[1, 5, 4] = 1.0              # peak one pixel left of the mask
    cams[1, 6, 6] = 0.5
    cams[2, 0, 0] = 1.0
    out = explain.localisation(cams, masks, tolerance=1)
    assert out["n"] == 2
    assert out["pointing_game"]["cam"] == 1.0
    assert out["energy_inside"]["cam"] == pytest.approx((1.0 + 0.5 / 1.5) / 2)
    assert out["mask_area"] == pytest.approx(4 / 64)
    assert 0 <= out["pointing_game"]["random"] <= 1 and 0 <= out["energy_inside"]["random"] <= 1
    # Chance: a 2x2 lesion dilated by one pixel covers 16 of 64 pixels; energy = 4 of 64.
    assert out["pointing_game"]["chance"] == pytest.approx(16 / 64)
    assert out["energy_inside"]["chance"] == pytest.approx(4 / 64)
    assert out["pointing_game"]["n"] == 2
    strict = explain.localisation(cams, masks, tolerance=0)
    assert strict["pointing_game"]["cam"] == 0.5


def test_localisation_without_lesions_and_with_empty_maps() -> None:
    out = explain.localisation(torch.rand(2, 8, 8), torch.zeros(2, 8, 8, dtype=torch.bool))
    assert out["n"] == 0 and out["pointing_game"]["cam"] is None
    masks = torch.ones(1, 8, 8, dtype=torch.bool)
    zero = explain.localisation(torch.zeros(1, 8, 8), masks)
    assert zero["pointing_game"]["cam"] == 0.0 and zero["energy_inside"]["cam"] == 0.0


# ---------------------------------------------------------------- the whole split

def test_explain_split_end_to_end() -> None:
    model = RegionNet(num_classes=2)
    nn.init.normal_(model.fc.weight, generator=torch.Generator().manual_seed(2))
    n = 12
    x = _images(n)
    gen = np.random.default_rng(0)
    y = gen.integers(0, 2, n)
    p1 = gen.random(n)
    probs = np.stack([1 - p1, p1], axis=1)
    masks = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    masks[y == 1, 4:10, 4:10] = True
    summary, cams = explain.explain_split(
        model, x, y_true=y, probs=probs, class_names=["NORMAL", "LESION"],
        target_layer=model.features[-1], layer_name="features", method="gradcam", masks=masks,
        faithfulness_n=8, sanity_n=4, seed=0)
    assert summary["method"] == "gradcam" and summary["target_layer"] == "features"
    maps = [(g["index"], m["target"]) for g in summary["gallery"] for m in g["maps"]]
    assert cams.shape == (len(maps), SIZE, SIZE) and len(summary["gallery"]) > 0
    keys = {"class", "class_index", "kind", "index", "prob", "target", "true", "pred", "maps", "repeated"}
    assert all(keys <= set(g) for g in summary["gallery"])
    assert all(g["target"] == g["class_index"] == g["maps"][0]["target"] or g["kind"] == "FP"
               for g in summary["gallery"])
    # Each map is the CAM of the class it names, not of the prediction.
    expected = explain.compute_cams(model, x[torch.tensor([r for r, _ in maps])],
                                    target_layer=model.features[-1],
                                    targets=torch.tensor([c for _, c in maps]), method="gradcam")
    torch.testing.assert_close(cams, expected)
    assert summary["faithfulness"]["n"] == 8
    assert summary["sanity"]["n"] == 4 and summary["sanity"]["layers_randomised"] == ["fc", "features.2"]
    assert summary["sanity"]["seeds"] == explain.SANITY_SEEDS
    assert summary["faithfulness"]["random_maps"]["per_image"] == explain.RANDOM_PER_IMAGE
    assert summary["localisation"]["n"] == min(8, int((y == 1).sum()))
    json.dumps(summary, allow_nan=False)
    again, cams_again = explain.explain_split(
        model, x, y_true=y, probs=probs, class_names=["NORMAL", "LESION"],
        target_layer=model.features[-1], layer_name="features", method="gradcam", masks=masks,
        faithfulness_n=8, sanity_n=4, seed=0)
    again.pop("timings"), summary.pop("timings")
    assert again == summary and torch.equal(cams, cams_again)
