"""Synthetic chest-radiograph-like images with lesions whose masks are known.

The anatomy is drawn with soft-edged ellipses on a normalised [-1, 1] grid: a bright body,
two dark lung fields, a brighter mediastinum and heart shadow, ribs as curved bright bands;
then a random global contrast curve and Gaussian noise. Lesions are blurred blobs (or a
basal effusion) inside a lung; their boolean masks let CAM localisation be scored.
Everything is vectorised over the batch with numpy; the same seed gives the same pixels.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..config import DataConfig, PreprocessConfig
from ..errors import DataError
from .base import SPLITS, Dataset, Split
from .preprocess import preprocess_stack
from .sources import (DataSource, RawExample, SourceProbe, check_class_sets, names_and_task,
                      pick_per_class)

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
LESION_TYPES = ("nodule", "opacity", "effusion")
SIDES = ("right", "left")      # patient sides: the patient's right lung is on the image's left
MAX_SLOTS = 3                  # most lesions one image carries
_CHUNK_PIXELS = 1 << 22        # pixels per vectorised chunk (bounds memory at large sizes)


@dataclass(frozen=True)
class LesionClass:
    kind: str | None           # None: normal
    side: int | None           # None: either lung, chosen per lesion


def class_specs(classes: int, *, ordinal: bool) -> tuple[list[str], list[LesionClass]]:
    """Class names and what each class draws."""
    if classes < 2:
        raise DataError(f"phantom classes must be at least 2, got {classes}")
    if ordinal:
        return [f"grade_{g}" for g in range(classes)], [LesionClass(None if g == 0 else "graded", None)
                                                       for g in range(classes)]
    if classes == 2:
        return ["normal", "lesion"], [LesionClass(None, None), LesionClass("lesion", None)]
    if classes - 1 <= len(LESION_TYPES):
        kinds = LESION_TYPES[:classes - 1]
        return ["normal", *kinds], [LesionClass(None, None)] + [LesionClass(k, None) for k in kinds]
    limit = 1 + len(LESION_TYPES) * len(SIDES)
    if classes > limit:
        raise DataError(f"phantom classes {classes} is more than the {limit} the generator can draw "
                        f"(normal + {', '.join(LESION_TYPES)} x {', '.join(SIDES)} lung); "
                        "use phantom_ordinal = true for more grades")
    pairs = [(k, s) for k in LESION_TYPES for s in range(len(SIDES))][:classes - 1]
    return (["normal", *[f"{k}-{SIDES[s]}" for k, s in pairs]],
            [LesionClass(None, None)] + [LesionClass(k, s) for k, s in pairs])


def fingerprint(params: dict) -> str:
    """sha256 of the generator's parameters (and its version)."""
    blob = json.dumps({"generator": "xreport.phantom", "version": GENERATOR_VERSION, **params},
                      sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def generate(n: int, *, size: int = 64, classes: int = 2, ordinal: bool = False,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` phantom radiographs: (images uint8 (N, 1, S, S), labels int64 (N,), masks bool (N, S, S)).

    Labels are balanced (each class n // classes or one more) in a random order.
    """
    if n < 0 or size < 8:
        raise DataError(f"phantom needs n >= 0 and size >= 8, got n={n}, size={size}")
    _names, specs = class_specs(classes, ordinal=ordinal)
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    labels = rng.permutation(np.arange(n) % classes).astype(np.int64)
    anatomy = _anatomy_params(rng, n)
    lesions = _lesion_params(rng, labels, specs, classes=classes, ordinal=ordinal, anatomy=anatomy)
    looks = {"gamma": rng.uniform(0.7, 1.4, n), "gain": rng.uniform(0.8, 1.15, n),
             "offset": rng.uniform(-0.06, 0.06, n), "noise": rng.uniform(0.025, 0.07, n)}
    images = np.empty((n, 1, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    step = max(1, _CHUNK_PIXELS // (size * size))
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        img, mask = _draw(yy, xx, _take(anatomy, sl), _take(lesions, sl), _take(looks, sl), rng)
        images[sl, 0] = img
        masks[sl] = mask
    return images, labels, masks


def _take(params: dict[str, np.ndarray], sl: slice) -> dict[str, np.ndarray]:
    return {k: v[sl] for k, v in params.items()}


def _anatomy_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    u = rng.uniform
    return {
        "cx": rng.normal(0.0, 0.04, n), "cy": rng.normal(0.06, 0.04, n),
        "body_w": u(0.84, 0.96, n), "body_h": u(1.0, 1.15, n),
        "lung_dx": u(0.37, 0.44, n), "lung_cy": u(-0.14, -0.06, n),
        "lung_w": u(0.24, 0.31, n), "lung_h": u(0.56, 0.68, n),
        "heart_w": u(0.26, 0.34, n), "heart_h": u(0.20, 0.27, n), "heart_dx": u(0.08, 0.16, n),
        "rib_freq": u(4.2, 5.6, n), "rib_curve": u(0.35, 0.6, n), "rib_phase": u(0, 2 * np.pi, n),
        "rib_amp": u(0.06, 0.12, n), "lung_dark": u(0.26, 0.38, n), "tilt": rng.normal(0.0, 0.05, n),
    }


def _lesion_params(rng: np.random.Generator, labels: np.ndarray, specs: list[LesionClass], *,
                   classes: int, ordinal: bool, anatomy: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n, u = labels.shape[0], rng.uniform
    shape = (n, MAX_SLOTS)
    # Draw every slot for every image so the stream does not depend on the labels' mix.
    side = rng.integers(0, 2, shape)
    radius, angle = np.sqrt(u(0.0, 0.5, shape)), u(0.0, 2 * np.pi, shape)
    sigma_jitter, amp_jitter, aspect = u(0.85, 1.15, shape), u(0.85, 1.15, shape), u(0.7, 1.4, shape)
    sigma_nodule, sigma_opacity = u(0.06, 0.1, shape), u(0.12, 0.18, shape)
    amp_nodule, amp_opacity = u(0.28, 0.45, shape), u(0.16, 0.26, shape)
    depth = u(0.2, 0.4, shape)                        # effusion depth as a fraction of lung height
    count_draw = rng.integers(1, 3, size=(n,))        # 1..2 lesions for a positive image
    active = np.zeros(shape, dtype=bool)
    kind = np.zeros(shape, dtype=np.int8)             # 0 blob, 1 effusion
    sigma = np.zeros(shape)
    amp = np.zeros(shape)
    for c, spec in enumerate(specs):
        rows = labels == c
        if spec.kind is None or not rows.any():
            continue
        if spec.kind == "graded":
            s = c / (classes - 1)
            count = np.full(rows.sum(), 1 + int(round(s * (MAX_SLOTS - 1))))
            sig = (0.04 + 0.05 * s) * sigma_jitter[rows]
            am = (0.10 + 0.16 * s) * amp_jitter[rows]
        elif spec.kind in ("lesion", "nodule"):
            count = count_draw[rows]
            sig, am = sigma_nodule[rows], amp_nodule[rows]
        elif spec.kind == "opacity":
            count = np.ones(rows.sum(), dtype=int)
            sig, am = sigma_opacity[rows], amp_opacity[rows]
        else:   # effusion
            count = np.ones(rows.sum(), dtype=int)
            sig, am = np.full((rows.sum(), MAX_SLOTS), 0.03), amp_opacity[rows] + 0.05
            kind[rows] = 1
        active[rows] = np.arange(MAX_SLOTS)[None, :] < count[:, None]
        sigma[rows], amp[rows] = sig, am
        if spec.side is not None:
            side[rows] = spec.side
    if not ordinal and classes == 2:
        # The binary "lesion" class mixes small nodules with a few larger opacities.
        big = (u(0, 1, shape) < 0.3) & active
        sigma = np.where(big, sigma_opacity * 0.8, sigma)
        amp = np.where(big, amp_opacity, amp)
    sign = np.where(side == 0, -1.0, 1.0)
    cx = anatomy["cx"][:, None] + sign * anatomy["lung_dx"][:, None] + \
        radius * np.cos(angle) * anatomy["lung_w"][:, None] * 0.8
    cy = anatomy["lung_cy"][:, None] + anatomy["cy"][:, None] + \
        radius * np.sin(angle) * anatomy["lung_h"][:, None] * 0.8
    # For an effusion, cy is the fluid level: ``depth`` of the lung's height above its base.
    lung_mid = (anatomy["lung_cy"] + anatomy["cy"])[:, None]
    fluid = lung_mid + anatomy["lung_h"][:, None] * (1 - 2 * depth)
    cy = np.where(kind == 1, fluid, cy)
    return {"active": active, "kind": kind, "side": side, "cx": cx, "cy": cy, "sigma": sigma,
            "aspect": aspect, "amp": amp}


def _soft_ellipse(yy: np.ndarray, xx: np.ndarray, cy: np.ndarray, cx: np.ndarray, h: np.ndarray,
                  w: np.ndarray, edge: float) -> np.ndarray:
    """(B, H, W) in [0, 1]: 1 inside an ellipse, a sigmoid fall-off of width ``edge``."""
    r = np.sqrt(((xx - cx[:, None, None]) / w[:, None, None]) ** 2 +
                ((yy - cy[:, None, None]) / h[:, None, None]) ** 2)
    return _sigmoid((1.0 - r) / edge)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * z)


def _draw(yy: np.ndarray, xx: np.ndarray, a: dict[str, np.ndarray], les: dict[str, np.ndarray],
          looks: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = {k: v.astype(np.float32) for k, v in a.items()}
    les = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in les.items()}
    looks = {k: v.astype(np.float32) for k, v in looks.items()}
    b = a["cx"].shape[0]
    col = lambda v: v[:, None, None]  # noqa: E731 - per-image scalar -> (B, 1, 1)
    # A small tilt of the whole patient.
    x = xx[None] + col(a["tilt"]) * yy[None]
    y = yy[None] - col(a["tilt"]) * xx[None]
    cy = a["cy"]
    body = _soft_ellipse(y, x, cy, a["cx"], a["body_h"], a["body_w"], 0.04)
    lung_y = a["lung_cy"] + cy
    lungs = [_soft_ellipse(y, x, lung_y, a["cx"] + sgn * a["lung_dx"], a["lung_h"], a["lung_w"], 0.07)
             for sgn in (-1.0, 1.0)]
    lung = np.maximum(lungs[0], lungs[1])
    heart = _soft_ellipse(y, x, cy + 0.28, a["cx"] + a["heart_dx"], a["heart_h"], a["heart_w"], 0.08)
    mediastinum = _sigmoid((0.09 - np.abs(x - col(a["cx"]))) / 0.03)
    phase = 2 * np.pi * col(a["rib_freq"]) * (y - col(a["rib_curve"]) * (x - col(a["cx"])) ** 2)
    ribs = ((0.5 + 0.5 * np.cos(phase + col(a["rib_phase"]))) ** 4) * body * \
        (np.abs(x - col(a["cx"])) > 0.08)
    img = 0.05 + 0.55 * body - col(a["lung_dark"]) * lung * (1 - 0.6 * heart) \
        + col(a["rib_amp"]) * ribs + 0.12 * mediastinum * body + 0.18 * heart
    lesion_img, mask = _lesions(y, x, lungs, les)
    img = img + lesion_img
    img = np.clip(img, 0.0, 1.0) ** col(looks["gamma"]) * col(looks["gain"]) + col(looks["offset"])
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * col(looks["noise"])
    out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return out, mask.reshape(b, *yy.shape)


def _lesions(y: np.ndarray, x: np.ndarray, lungs: list[np.ndarray],
             les: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Lesion intensity (B, H, W) and mask; computed only for the images that carry one."""
    total = np.zeros(y.shape, dtype=np.float32)
    mask = np.zeros(y.shape, dtype=bool)
    for slot in range(les["active"].shape[1]):
        rows = np.flatnonzero(les["active"][:, slot])
        if rows.size == 0:
            continue
        p = {k: v[rows, slot][:, None, None] for k, v in les.items() if k != "active"}
        yr, xr = y[rows] if y.shape[0] > 1 else y, x[rows] if x.shape[0] > 1 else x
        lung = np.where(p["side"] == 0, lungs[0][rows], lungs[1][rows])
        if (p["kind"] == 1).all():
            shape = _sigmoid((yr - p["cy"]) / 0.03)
        else:
            d2 = ((xr - p["cx"]) / (p["sigma"] * p["aspect"])) ** 2 + \
                ((yr - p["cy"]) * p["aspect"] / p["sigma"]) ** 2
            shape = np.exp(-0.5 * d2)
            if (p["kind"] == 1).any():   # effusion: the lung below the fluid level, soft meniscus
                shape = np.where(p["kind"] == 1, _sigmoid((yr - p["cy"]) / 0.03), shape)
        shape *= lung
        total[rows] += p["amp"] * shape
        mask[rows] |= shape > 0.5
    return total, mask


def split_seed(seed: int, split: str) -> int:
    """The generator's seed for one split of ``data.phantom_seed``."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1)[0])


def settings(d: DataConfig) -> dict:
    """The data.phantom_* settings the fingerprint covers."""
    return {"size": d.phantom_size, "classes": d.phantom_classes, "ordinal": d.phantom_ordinal,
            "seed": d.phantom_seed, "train": d.phantom_train, "val": d.phantom_val, "test": d.phantom_test}


class PhantomSource(DataSource):
    """``data.kind = "phantom"`` (or data.dataset "phantom"): the generator above, drawn
    from the data.phantom_* settings; no file is read."""

    kind = "phantom"

    def named(self, dataset: str, *, chosen: bool) -> str | None:
        return "phantom" if chosen or dataset.lower() == "phantom" else None

    def load(self, source: str, data_cfg: DataConfig, preprocess_cfg: PreprocessConfig, *,
             image_size: int, splits: tuple[str, ...]) -> Dataset:
        d = data_cfg
        names, _specs = class_specs(d.phantom_classes, ordinal=d.phantom_ordinal)
        names, task = names_and_task(d, names, where="phantom",
                                     default_task="ordinal" if d.phantom_ordinal else None)
        out: dict[str, Split] = {}
        for split in splits:
            n = getattr(d, f"phantom_{split}")
            images, labels, masks = generate(n, size=d.phantom_size, classes=d.phantom_classes,
                                             ordinal=d.phantom_ordinal, seed=split_seed(d.phantom_seed, split))
            x, m = preprocess_stack(images, preprocess_cfg, image_size, masks=masks)
            out[split] = Split(split, x, torch.from_numpy(labels),
                               [f"phantom-{split}-{i:05d}" for i in range(n)], m)
        return Dataset(name="phantom", source=f"phantom(seed={d.phantom_seed})", kind=self.kind,
                       class_names=names, task=task, splits=out, fingerprint=fingerprint(settings(d)),
                       original_size=(d.phantom_size, d.phantom_size), original_channels=1)

    def probe(self, source: str, data_cfg: DataConfig, *, sample: int) -> SourceProbe:
        """The generator's train split, drawn at its native size."""
        ds = self.load(source, data_cfg, PreprocessConfig(), image_size=data_cfg.phantom_size,
                       splits=("train",))
        check_class_sets(ds, allow_missing=data_cfg.allow_missing_classes)
        train = ds.splits["train"]
        return SourceProbe(self.kind, source, data_cfg.phantom_size, False,
                           train.class_counts(ds.num_classes), data_cfg.phantom_val, ds.task,
                           tuple(ds.class_names))

    def raw_examples(self, source: str, data_cfg: DataConfig, n_per_class: int,
                     rng: np.random.Generator, *, split: str) -> list[RawExample]:
        d = data_cfg
        n = getattr(d, f"phantom_{split}")
        images, labels, _masks = generate(n, size=d.phantom_size, classes=d.phantom_classes,
                                          ordinal=d.phantom_ordinal, seed=split_seed(d.phantom_seed, split))
        return [(images[i, 0], int(labels[i])) for i in pick_per_class(labels, n_per_class, rng)]
