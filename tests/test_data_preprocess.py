"""Preprocessing presets, normalisation, augmentation and the imbalance/summary helpers."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xreport.config import AugmentConfig, DataConfig, PreprocessConfig
from xreport.data import (Split, augment_batch, class_distribution, class_weights, compute_mean_std,
                          describe_pipeline, leakage_check, load_dataset, normalize_batch,
                          preprocess_image, resolve_normalization, sampler_weights)
from xreport.data.augment import mix_batch, mix_loss
from xreport.data.base import Dataset
from xreport.data.preprocess import preprocess_stack
from xreport.errors import ConfigError, DataError

BASE = PreprocessConfig(keep_aspect=False)


def bordered(rng_seed: int = 0) -> np.ndarray:
    img = np.zeros((60, 80), dtype=np.uint8)
    img[10:50, 20:60] = np.random.default_rng(rng_seed).integers(60, 180, (40, 40))
    return img


def test_black_border_crop_keeps_only_the_content() -> None:
    img = bordered()
    out = preprocess_image(img, replace(BASE, crop_black_border=True), 40)
    direct = preprocess_image(img[10:50, 20:60], BASE, 40)
    assert np.array_equal(out, direct)
    assert preprocess_image(img, BASE, 40).min() == 0        # without the crop the border stays


def test_equalize_clahe_unsharp_change_the_image_as_expected() -> None:
    low = np.tile(np.linspace(100, 140, 32), (32, 1)).astype(np.uint8)   # low contrast
    eq = preprocess_image(low, replace(BASE, equalize=True), 32)
    assert eq.min() < 10 and eq.max() > 245
    cl = preprocess_image(low, replace(BASE, clahe=True), 32)
    assert cl.std() > low.std() and not np.array_equal(cl, low)
    step = np.zeros((32, 32), np.uint8)
    step[:, 16:] = 100
    step[:, :16] = 50
    sharp = preprocess_image(step, replace(BASE, unsharp=True), 32)
    assert sharp[:, 15].mean() < 50 and sharp[:, 16].mean() > 100        # overshoot at the edge
    assert np.array_equal(sharp[:, :8], step[:, :8])                     # flat areas unchanged


def test_keep_aspect_pads_and_plain_resize_stretches() -> None:
    wide = np.full((20, 40), 200, dtype=np.uint8)
    padded = preprocess_image(wide, PreprocessConfig(keep_aspect=True), 32)
    assert padded.shape == (32, 32) and padded[:8].max() == 0 and padded[8:24].min() == 200
    stretched = preprocess_image(wide, BASE, 32)
    assert stretched.min() == 200


def test_to_rgb_and_colour_input() -> None:
    grey = bordered()
    rgb = preprocess_image(grey, replace(BASE, to_rgb=True), 16)
    assert rgb.shape == (16, 16, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])
    colour = np.dstack([grey, grey // 2, grey // 3])
    assert preprocess_image(colour, replace(BASE, equalize=True, clahe=True), 16).shape == (16, 16, 3)
    with pytest.raises(DataError, match="uint8"):
        preprocess_image(grey.astype(np.float32), BASE, 16)


def test_stack_paths_agree_and_masks_follow() -> None:
    images = torch.from_numpy(np.stack([bordered(i) for i in range(4)])[:, None])
    masks = torch.zeros((4, 60, 80), dtype=torch.bool)
    masks[:, 20:30, 30:40] = True
    fast, fast_masks = preprocess_stack(images, PreprocessConfig(), 30, masks=masks)
    for i in range(4):
        assert np.array_equal(fast[i, 0].numpy(), preprocess_image(images[i, 0].numpy(), PreprocessConfig(), 30))
    # keep-aspect: 60x80 -> 22x30 with 4 rows of padding; mask rows 20..30 -> 7.5..11.25 (+4)
    rows = fast_masks[0].any(dim=1).nonzero().flatten()
    assert 10 <= rows.min() <= 12 and 14 <= rows.max() <= 15
    cropped, cropped_masks = preprocess_stack(images, PreprocessConfig(crop_black_border=True), 40, masks=masks)
    # cropped to rows 10..50, cols 20..60: the mask (rows 20..30 of 60) lands at rows 10..20 of 40
    rows = cropped_masks[0].any(dim=1).nonzero().flatten()
    assert rows.min() == 10 and rows.max() == 19
    assert cropped.shape == (4, 1, 40, 40)


def test_describe_pipeline_lists_steps_in_order() -> None:
    cfg = PreprocessConfig(crop_black_border=True, clahe=True, to_rgb=True, normalize="fixed")
    steps = [s["step"] for s in describe_pipeline(cfg, 64)]
    assert steps == ["decode", "crop_black_border", "clahe", "resize", "to_rgb", "normalize"]
    resize = describe_pipeline(cfg, 64)[3]["params"]
    assert resize["size"] == 64 and resize["keep_aspect"] is True


# ---------------------------------------------------------------- normalisation
def make_split(images: torch.Tensor, labels: list[int] | None = None, name: str = "train") -> Split:
    y = None if labels is None else torch.tensor(labels)
    return Split(name, images, y, [f"{name}-{i}" for i in range(images.shape[0])])


def test_mean_std_and_modes() -> None:
    x = torch.zeros((2, 1, 4, 4), dtype=torch.uint8)
    x[1] = 255
    split = make_split(x)
    mean, std = compute_mean_std(split)
    assert mean == pytest.approx((0.5,)) and std == pytest.approx((0.5,))
    assert resolve_normalization(PreprocessConfig(), split) == ((0.5,), (0.5,))
    mean, std = resolve_normalization(PreprocessConfig(normalize="imagenet"), split)
    assert mean == pytest.approx(((0.485 + 0.456 + 0.406) / 3,))
    assert len(resolve_normalization(PreprocessConfig(normalize="imagenet"), None, channels=3)[0]) == 3
    fixed = resolve_normalization(PreprocessConfig(normalize="fixed", mean=(0.2,), std=(0.1,)), None, channels=3)
    assert fixed == ((0.2, 0.2, 0.2), (0.1, 0.1, 0.1))
    with pytest.raises(ConfigError, match="2 values for 3-channel"):
        resolve_normalization(PreprocessConfig(normalize="fixed", mean=(0.2, 0.1), std=(0.1, 0.1)), None, channels=3)
    flat = make_split(torch.full((2, 1, 4, 4), 7, dtype=torch.uint8))
    assert resolve_normalization(PreprocessConfig(), flat)[1] == (1.0,)     # no division by zero


def test_normalize_batch_uint8_and_float() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2)
    out = normalize_batch(x, (0.5,), (0.5,))
    assert out.dtype == torch.float32 and out.flatten().tolist() == [-1.0, 1.0]
    assert torch.equal(normalize_batch(x.float() / 255, (0.5,), (0.5,)), out)
    with pytest.raises(DataError, match="1 means for 3-channel"):
        normalize_batch(torch.zeros((1, 3, 2, 2), dtype=torch.uint8), (0.5,), (0.5,))


# ---------------------------------------------------------------- augmentation
def batch() -> torch.Tensor:
    return torch.rand((6, 1, 16, 16), generator=torch.Generator().manual_seed(0))


def test_augment_same_seed_same_result() -> None:
    cfg = AugmentConfig(vflip=0.5, blur=0.5, noise=0.05)
    a = augment_batch(batch(), cfg, generator=torch.Generator().manual_seed(1))
    b = augment_batch(batch(), cfg, generator=torch.Generator().manual_seed(1))
    c = augment_batch(batch(), cfg, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == batch().shape and a.min() >= 0 and a.max() <= 1


def test_augment_off_is_identity_and_flips_are_exact() -> None:
    off = AugmentConfig(hflip=0, vflip=0, rotation=0, translate=0, scale=0, brightness=0, contrast=0)
    x = batch()
    assert torch.equal(augment_batch(x, off, generator=torch.Generator().manual_seed(0)), x)
    flip = replace(off, hflip=1.0)
    assert torch.equal(augment_batch(x, flip, generator=torch.Generator().manual_seed(0)), x.flip(3))
    # The affine path with zero-size parameters is also (numerically) the identity.
    tiny = replace(off, rotation=1e-9)
    assert torch.allclose(augment_batch(x, tiny, generator=torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_augment_rotation_moves_pixels_and_noise_adds_variance() -> None:
    x = torch.zeros((4, 1, 32, 32))
    x[:, :, 4:8, 14:18] = 1.0
    rotated = augment_batch(x, AugmentConfig(hflip=0, rotation=90, translate=0, scale=0, brightness=0,
                                             contrast=0), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(rotated, x, atol=0.1)
    flat = torch.full((4, 1, 32, 32), 0.5)
    noisy = augment_batch(flat, AugmentConfig(hflip=0, rotation=0, translate=0, scale=0, brightness=0,
                                              contrast=0, noise=0.1), generator=torch.Generator().manual_seed(0))
    assert 0.08 < float(noisy.std()) < 0.12
    with pytest.raises(DataError, match="float"):
        augment_batch(torch.zeros((1, 1, 4, 4), dtype=torch.uint8), AugmentConfig(),
                      generator=torch.Generator())


def _distinct_batch(b: int = 8) -> torch.Tensor:
    """Images that differ at every pixel, so each mixed pixel tells which image it came from."""
    return (torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1) + 1) / (b + 1) * torch.ones(b, 3, 24, 20)


def test_batch_mixing_is_off_by_default_and_for_one_image() -> None:
    x = _distinct_batch()
    assert mix_batch(x, AugmentConfig(), generator=torch.Generator().manual_seed(0)) is None
    assert mix_batch(x[:1], AugmentConfig(mixup=0.2), generator=torch.Generator().manual_seed(0)) is None


def test_mixup_blends_each_image_with_its_partner_at_the_drawn_weight() -> None:
    x = _distinct_batch()
    for seed in range(5):
        mix = mix_batch(x, AugmentConfig(mixup=0.4), generator=torch.Generator().manual_seed(seed))
        assert mix is not None and mix.kind == "mixup" and 0 <= mix.weight <= 1
        assert sorted(mix.partner.tolist()) == list(range(8))
        assert torch.allclose(mix.images, mix.weight * x + (1 - mix.weight) * x[mix.partner])
    # Beta(alpha, alpha) with a large alpha concentrates at 1/2; with a small one at 0 and 1.
    weights = [mix_batch(x, AugmentConfig(mixup=a), generator=torch.Generator().manual_seed(s)).weight  # type: ignore[union-attr]
               for a in (50.0, 0.1) for s in range(40)]
    assert all(0.3 < w < 0.7 for w in weights[:40])
    assert np.mean([min(w, 1 - w) < 0.1 for w in weights[40:]]) > 0.5


def test_cutmix_pastes_one_box_and_its_weight_is_the_share_kept() -> None:
    x = _distinct_batch()
    for seed in range(12):
        mix = mix_batch(x, AugmentConfig(cutmix=1.0), generator=torch.Generator().manual_seed(seed))
        assert mix is not None and mix.kind == "cutmix"
        own = (mix.images == x).all(dim=1)                         # (B, H, W): pixel kept
        pasted = (mix.images == x[mix.partner]).all(dim=1)
        moved = mix.partner != torch.arange(8)
        assert bool((own | pasted).all())
        # The same box in every image; where the partner is another image, its share is 1 - weight.
        box = ~own[moved]
        assert bool((box == box[0]).all())
        assert float(box[0].float().mean()) == pytest.approx(1 - mix.weight)
        rows, cols = box[0].any(1).nonzero().flatten(), box[0].any(0).nonzero().flatten()
        if len(rows):
            assert bool(box[0][rows.min():rows.max() + 1, cols.min():cols.max() + 1].all())  # a rectangle


def test_mixing_is_seeded_and_both_kinds_are_used_when_both_are_on() -> None:
    x, cfg = _distinct_batch(), AugmentConfig(mixup=0.2, cutmix=1.0)
    a = mix_batch(x, cfg, generator=torch.Generator().manual_seed(3))
    b = mix_batch(x, cfg, generator=torch.Generator().manual_seed(3))
    assert a is not None and b is not None and torch.equal(a.images, b.images) and a.weight == b.weight
    kinds = {mix_batch(x, cfg, generator=torch.Generator().manual_seed(s)).kind for s in range(20)}  # type: ignore[union-attr]
    assert kinds == {"mixup", "cutmix"}


def test_mixed_loss_is_cross_entropy_against_the_blended_targets() -> None:
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    mix = mix_batch(_distinct_batch(), AugmentConfig(mixup=1.0), generator=torch.Generator().manual_seed(1))
    assert mix is not None
    blended = (mix.weight * F.one_hot(labels, 4) + (1 - mix.weight) * F.one_hot(labels[mix.partner], 4)).float()
    ce = torch.nn.CrossEntropyLoss()
    assert float(mix_loss(ce, logits, labels, mix)) == pytest.approx(float(F.cross_entropy(logits, blended)), rel=1e-6)
    assert float(mix_loss(ce, logits, labels, None)) == pytest.approx(float(ce(logits, labels)))
    dominant = mix.dominant_labels(labels)
    assert torch.equal(dominant, labels if mix.weight >= 0.5 else labels[mix.partner])


def test_mixing_strengths_are_validated() -> None:
    from xreport.config import RunConfig, validate
    for key in ("mixup", "cutmix"):
        with pytest.raises(ConfigError, match=f"augment.{key}"):
            validate(RunConfig(augment=AugmentConfig(**{key: -0.5})))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_on_cuda_with_a_cpu_generator() -> None:
    out = augment_batch(batch().cuda(), AugmentConfig(noise=0.1), generator=torch.Generator().manual_seed(0))
    assert out.is_cuda and out.shape == batch().shape


# ---------------------------------------------------------------- imbalance and summaries
def test_class_and_sampler_weights() -> None:
    labels = torch.tensor([0, 0, 0, 1])
    w = class_weights(labels, 2)
    assert w.tolist() == pytest.approx([0.5, 1.5]) and float(w.mean()) == pytest.approx(1.0)
    s = sampler_weights(labels, 2)
    assert s.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    assert float(s[labels == 0].sum()) == pytest.approx(float(s[labels == 1].sum()))
    with pytest.raises(DataError, match="outside 0..1"):
        class_weights(torch.tensor([0, 2]), 2)
    with pytest.raises(DataError, match="no"):
        sampler_weights(None, 2)


def test_distribution_and_leakage() -> None:
    rng = torch.Generator().manual_seed(0)
    train = torch.randint(0, 255, (5, 1, 4, 4), generator=rng, dtype=torch.uint8)
    test = torch.randint(0, 255, (3, 1, 4, 4), generator=rng, dtype=torch.uint8)
    test[1] = train[2]                                        # a leaked image
    ds = Dataset(name="t", source="mem", kind="folder", class_names=["a", "b"], task="binary",
                 splits={"train": make_split(train, [0, 0, 1, 1, 1]),
                         "test": make_split(test, None, "test")}, fingerprint="x")
    dist = class_distribution(ds)
    assert dist["splits"] == {"train": [2, 3], "test": None} and dist["sizes"] == {"train": 5, "test": 3}
    leak = leakage_check(ds)
    assert leak["exact_duplicates"] == {"train-val": None, "train-test": 1, "val-test": None}
    assert leak["examples"] == [{"pair": "train-test", "a": "train-2", "b": "test-1"}]


def test_leakage_check_on_phantom_has_no_duplicates() -> None:
    ds = load_dataset(DataConfig(phantom_train=50, phantom_val=20, phantom_test=20), PreprocessConfig(),
                      image_size=32)
    assert set(leakage_check(ds)["exact_duplicates"].values()) == {0}
