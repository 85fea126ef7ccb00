"""A small synthetic run folder for the report tests: real checkpoint, metrics, history, CAMs."""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from xreport import config as xconfig
from xreport import metrics as xmetrics
from xreport import runs
from xreport.models import build_model

EVIL_CLASS = "<script>alert(1)</script>"



def _stat(cam: float, random: float, difference: float, ci95: list[float], p: float, verdict: str, *,
          n: int) -> dict:
    """A paired statistic as explain writes it into metrics.json."""
    return {"cam": cam, "random": random, "difference": difference, "ci95": ci95, "p_value": p, "n": n,
            "margin": 0.02, "higher_is_better": difference > 0, "verdict": verdict}

def _history_rows(epochs: int) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        # The validation loss bottoms out at epoch 3, then climbs: an overfitting run.
        rows.append({"epoch": e, "train_loss": round(0.7 / e, 4),
                     "val_loss": round(0.45 + 0.03 * (e - 3) ** 2, 4),
                     "train_acc": round(0.6 + 0.05 * e, 4), "val_acc": round(0.7 + 0.02 * min(e, 3), 4),
                     "train_f1": round(0.55 + 0.05 * e, 4), "val_f1": round(0.65 + 0.02 * min(e, 3), 4),
                     "val_auc": round(0.8 + 0.03 * min(e, 3), 4), "lr": 1e-3, "seconds": 1.5})
    return rows


def _cam_png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def make_run(root: Path, *, name: str = "fixture_run", class_names: tuple[str, ...] = ("NORMAL", "PNEUMONIA"),
             n_test: int = 80, seed: int = 0, class_names_zh: tuple[str, ...] | None = None) -> runs.RunPaths:
    """Write checkpoints/NAME and reports/NAME under ``root``; returns their RunPaths.

    Two classes give the binary fixture; more give a multi-class one (``n_test`` images per
    class then), for the layout tests."""
    k = len(class_names)
    zh = list(class_names_zh) if class_names_zh else (["正常", "肺炎"] if k == 2 else list(class_names))
    paths = runs.RunPaths(name, checkpoints_root=root / "checkpoints", reports_root=root / "reports")
    cfg = xconfig.RunConfig(
        name=name, image_size=32,
        data=xconfig.DataConfig(dataset="phantom", phantom_size=32, phantom_train=24, phantom_val=12,
                                phantom_test=n_test,
                                # the names the checkpoint records (classes match by name)
                                class_names=tuple(class_names) if k == 2 else ()),
        train=xconfig.TrainConfig(epochs=6, batch_size=16, imbalance="sampler", seed=seed))
    runs.write_text(paths.config, xconfig.to_toml(cfg))

    model = build_model("resnet18", num_classes=k, in_channels=1, small_input_stem=True)
    meta = {
        "arch": "resnet18", "num_classes": k, "class_names": list(class_names),
        "class_names_i18n": {"zh-TW": zh, "zh-CN": zh},
        "task": "binary" if k == 2 else "multiclass", "in_channels": 1, "image_size": 32, "small_input_stem": True,
        "dropout": 0.0, "pretrained": False, "mean": [0.48], "std": [0.22],
        "preprocess": dataclasses.asdict(cfg.preprocess),
        "pipeline": [{"step": "decode", "params": {"dtype": "uint8"}},
                     {"step": "resize", "params": {"size": 32, "keep_aspect": True}},
                     {"step": "normalize", "params": {"mode": "dataset"}}],
        "data": {"dataset": "phantom", "kind": "phantom"}, "data_fingerprint": "ab" * 32,
        "epoch": 3, "val_metrics": {"loss": 0.45, "acc": 0.76, "f1": 0.71, "auc": 0.89},
        "selected_by": "val_auc", "seed": seed, "config": xconfig.to_dict(cfg),
        "versions": {"python": "3.11.9", "torch": "2.x", "torchvision": "0.x", "xreport": "0.1.0"},
        "params": 11_000_000, "created": "2025-01-02T03:04:05", "command": ["xreport", "train", "--config", "c.toml"],
    }
    runs.save_checkpoint(paths.best, state_dict=model.state_dict(), meta=meta)

    with open(paths.history, "w", newline="", encoding="utf-8") as fh:
        rows = _history_rows(6)
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    rng = np.random.default_rng(seed)
    if k == 2:
        splits = {"train": [6, 18], "val": [4, 8], "test": [30, 50]}
        y = np.array([0] * 30 + [1] * (n_test - 30))
        logits = rng.normal(0, 1, n_test) + 1.6 * y + 0.8     # shifted: leans to class 1
        p1 = 1 / (1 + np.exp(-logits))
        probs = np.stack([1 - p1, p1], axis=1)
    else:
        splits = {"train": [60 + 7 * c for c in range(k)], "val": [12] * k, "test": [n_test] * k}
        y = np.repeat(np.arange(k), n_test)
        logits = rng.normal(0, 1, (y.size, k)) + 2.0 * np.eye(k)[y]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    runs.write_json(paths.class_distribution, {"class_names": list(class_names), "splits": splits})
    metrics = xmetrics.compute_all(y, probs, class_names=list(class_names), task=meta["task"], n_boot=100, seed=0)

    gallery = []
    for ci, cls in enumerate(class_names):
        other = class_names[(ci + 1) % k]
        for kind in ("TP", "FN"):
            for j in range(2):
                pred = cls if kind == "TP" else other
                maps = []
                for target in dict.fromkeys([cls, pred]):
                    rel = f"cams/{ci}_{kind}_{j}_{target}.png"
                    _cam_png(paths.report_dir / rel, seed=ci * 10 + j)
                    maps.append({"target": class_names.index(target), "class": target, "file": rel,
                                 "prob": 0.9 - 0.1 * j if target == pred else 0.1 + 0.1 * j})
                gallery.append({"class": cls, "class_index": ci, "kind": kind, "id": f"img_{ci}{j}{kind}.png",
                                "index": j, "prob": maps[0]["prob"], "true": cls, "prob_true": maps[0]["prob"],
                                "pred": pred, "prob_pred": 0.9 - 0.1 * j, "repeated": False,
                                "target": ci, "maps": maps, "file": maps[0]["file"]})
    explain = {
        "method": "gradcam", "target_layer": "layer4", "gallery": gallery, "protocol": "fast",
        "faithfulness": {"n": 16, "steps": 5, "baseline": "blur", "verdict": "not_distinguishable",
                         "random_maps": {"per_image": 2}, "scores": ["deletion_auc", "insertion_auc",
                                                                     "road_morf", "road_lerf"],
                         "deletion_auc": _stat(0.31, 0.42, -0.11, [-0.15, -0.07], 0.0004, "better", n=16),
                         "insertion_auc": _stat(0.66, 0.51, 0.15, [0.1, 0.2], 0.0002, "better", n=16),
                         "road_morf": _stat(0.52, 0.55, -0.03, [-0.07, 0.01], 0.21, "not_distinguishable", n=16),
                         "road_lerf": _stat(0.7, 0.6, 0.1, [0.05, 0.15], 0.003, "better", n=16),
                         "deletion_curve": {"cam": [0.9, 0.5, 0.3, 0.2, 0.1, 0.1],
                                            "random": [0.9, 0.7, 0.5, 0.4, 0.3, 0.1]},
                         "insertion_curve": {"cam": [0.1, 0.5, 0.7, 0.8, 0.9, 0.9],
                                             "random": [0.1, 0.3, 0.4, 0.6, 0.7, 0.9]},
                         "road_morf_curve": {"cam": [0.7, 0.5, 0.45, 0.4], "random": [0.75, 0.6, 0.5, 0.4]},
                         "road_lerf_curve": {"cam": [0.9, 0.8, 0.7, 0.6], "random": [0.8, 0.7, 0.5, 0.4]}},
        "sanity": {"n": 8, "seeds": 3, "verdict": "pass", "layers_randomised": ["fc", "layer4.1"],
                   "stages": [{"randomised": "fc", "verdict": "inconclusive",
                               "spearman": {"mean": 0.42, "sd_seeds": 0.2, "ci95": [0.2, 0.6], "n": 8,
                                            "limit": 0.5, "verdict": "inconclusive", "per_seed": [0.3, 0.4, 0.56]},
                               "ssim": {"mean": 0.5, "sd_seeds": 0.1, "ci95": [0.4, 0.6], "n": 8,
                                        "per_seed": [0.4, 0.5, 0.6]}},
                              {"randomised": "layer4.1", "verdict": "pass",
                               "spearman": {"mean": 0.12, "sd_seeds": 0.05, "ci95": [0.05, 0.2], "n": 8,
                                            "limit": 0.5, "verdict": "pass", "per_seed": [0.1, 0.12, 0.14]},
                               "ssim": {"mean": 0.2, "sd_seeds": 0.05, "ci95": [0.1, 0.3], "n": 8,
                                        "per_seed": [0.15, 0.2, 0.25]}}]},
        "localisation": {"n": 16, "tolerance": 1, "random_per_image": 2, "verdict": "better",
                         "pointing_game": {**_stat(0.62, 0.2, 0.55, [0.4, 0.7], 0.001, "better", n=16),
                                           "chance": 0.07},
                         "energy_inside": {**_stat(0.4, 0.15, 0.35, [0.3, 0.4], 0.0004, "better", n=16),
                                           "chance": 0.05}},
    }
    runs.write_json(paths.metrics, {
        "schema": 1, "run": name, "split": "test", "created": "2025-01-03T10:00:00", "device": "cpu",
        "tta": False, "checkpoint": {"path": str(paths.best), "sha256": runs.sha256_file(paths.best), "epoch": 3},
        "data": {"source": "phantom(seed=1234)", "fingerprint": "ab" * 32, "n": int(y.size)},
        "metrics": metrics, "explain": explain, "timings": {},
        "skipped": [{"file": "bad/broken.png", "reason": "not an image"}]})
    return paths


_SHARED: dict[str, object] = {}


def shared_run() -> tuple[runs.RunPaths, dict]:
    """One fixture run and its context (en + zh-TW) per test process: drawing charts is slow."""
    if "paths" not in _SHARED:
        import atexit
        import shutil
        import tempfile

        from xreport.build import report_context

        root = Path(tempfile.mkdtemp(prefix="xreport-report-"))
        atexit.register(shutil.rmtree, root, True)
        paths = make_run(root)
        _SHARED["paths"] = paths
        _SHARED["context"] = report_context(paths, langs=["en", "zh-TW"], command="xreport build --run fixture_run")
    return _SHARED["paths"], _SHARED["context"]  # type: ignore[return-value]
