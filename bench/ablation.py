"""What each ingredient of the ResNet-18 PneumoniaMNIST recipe buys: leave-one-out ablation.

Each variant is the shipped recipe with one ingredient changed back to the plain choice, trained
on one seed, selected on the validation split, and tested once. The recipe row itself comes from
bench/results/quality.json when that holds the same seed (CPU training is deterministic: the
same seed gives the same weights), otherwise it is trained here too. A single seed: read a
difference as real only when it is well beyond the recipe's seed-to-seed spread in
quality.json (test ACC sd 0.002, AUC sd 0.001 for ResNet-18).

    .venv/bin/python bench/ablation.py [--seed 0] [--only standard_stem,no_augmentation]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from quality import REPO, machine, run_seed
from xreport import runs

RECIPE = REPO / "configs" / "pneumoniamnist_r18.toml"
QUALITY = REPO / "bench" / "results" / "quality.json"
RESULTS = REPO / "bench" / "results" / "ablation.json"

NO_AUGMENTATION = {f"augment.{k}": 0.0 for k in ("rotation", "translate", "scale", "brightness", "contrast")}

# name -> (what changes, dotted-key overrides of the recipe)
VARIANTS: dict[str, tuple[str, dict]] = {
    "standard_stem": ("torchvision's 7x7/2 stem + max-pool instead of the 3x3/1 small-input stem",
                      {"model.small_input_stem": "off"}),
    "no_augmentation": ("no rotation, translation, scale, brightness or contrast jitter", NO_AUGMENTATION),
    "no_label_smoothing": ("label smoothing 0.05 -> 0", {"train.label_smoothing": 0.0}),
    "no_class_weights": ("plain cross-entropy instead of class-weighted (train is ~1:3)",
                         {"train.imbalance": "none"}),
    "balanced_sampler": ("a class-balanced sampler instead of class weights",
                         {"train.imbalance": "sampler"}),
    "constant_lr": ("constant learning rate, no warm-up, instead of warm-up + cosine",
                    {"train.schedule": "none", "train.warmup_epochs": 0}),
    "no_dropout": ("dropout 0.2 before the classifier -> 0", {"model.dropout": 0.0}),
}


def recipe_row_from_quality(seed: int) -> dict | None:
    if not QUALITY.exists():
        return None
    entry = json.loads(QUALITY.read_text()).get("recipes", {}).get(RECIPE.stem, {})
    for row in entry.get("per_seed", []):
        if row["seed"] == seed:
            return {**row, "source": str(QUALITY.relative_to(REPO))}
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated variant names (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    rows = existing.get("variants", {})
    with tempfile.TemporaryDirectory(prefix="xreport-ablation-") as tmp:
        recipe_row = recipe_row_from_quality(args.seed)
        if recipe_row is None:
            recipe_row = {**run_seed(RECIPE, args.seed, Path(tmp)), "source": "trained here"}
        rows["recipe"] = {"change": "none (configs/pneumoniamnist_r18.toml)", **recipe_row}
        for name in names:
            change, overrides = VARIANTS[name]
            row = run_seed(RECIPE, args.seed, Path(tmp), overrides=overrides, name=name)
            rows[name] = {"change": change, "overrides": overrides, **row,
                          "delta_test_acc": round(row["test_acc"] - recipe_row["test_acc"], 4),
                          "delta_test_auc": round(row["test_auc"] - recipe_row["test_auc"], 4)}
            print(json.dumps({"variant": name, **rows[name]}), flush=True)
            payload = {"date": dt.date.today().isoformat(), "machine": machine(),
                       "recipe": str(RECIPE.relative_to(REPO)), "seed": args.seed,
                       "command": " ".join(["python", *sys.argv]), "variants": rows}
            runs.write_text(args.out, json.dumps(payload, indent=2) + "\n")  # atomic
    return 0


if __name__ == "__main__":
    sys.exit(main())
