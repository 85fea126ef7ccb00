"""Model quality on PneumoniaMNIST against the published table.

Trains each recipe with several seeds (selection on the validation split only), evaluates
each trained model once on the test split, and writes bench/results/quality.json: merged per
recipe and seed (a later run of some seeds replaces just those), rewritten after every seed so
a stopped run keeps what it finished.

    .venv/bin/python bench/quality.py configs/pneumoniamnist_r18.toml --seeds 0 1 2 [--keep .]

--keep DIR keeps the trained run folders as DIR/checkpoints/<recipe>-s<seed> for `xreport build`
and `xreport compare` (`--keep .` puts them where `xreport build --run` looks). They are made
from the data set's images, so they stay out of git.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from xreport import config as config_mod  # noqa: E402
from xreport.evaluate import evaluate_run  # noqa: E402
from xreport import runs  # noqa: E402
from xreport.runs import RunPaths  # noqa: E402
from xreport.train import train  # noqa: E402

# MedMNIST v2 (Yang et al. 2023, Table 3) and MedMNIST+ (three seeds, 28 px) on this test split.
PUBLISHED = {
    "MedMNIST v2 ResNet-18 (28)": {"acc": 0.854, "auc": 0.944},
    "MedMNIST v2 ResNet-50 (224)": {"acc": 0.884, "auc": 0.962},
    "MedMNIST v2 AutoKeras": {"acc": 0.878, "auc": 0.947},
    "MedMNIST v2 Google AutoML Vision": {"acc": 0.946, "auc": 0.991},
    "MedMNIST+ ResNet-18 (28)": {"acc": 0.831, "auc": 0.950},
    "MedMNIST+ best (28)": {"acc": 0.866, "auc": 0.973},
}


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "cuda": torch.cuda.is_available()}


def run_seed(recipe: Path, seed: int, workdir: Path, *, overrides: dict | None = None,
             name: str | None = None) -> dict:
    """Train ``recipe`` (with dotted-key ``overrides``) on one seed, then test it once."""
    cfg = config_mod.load(recipe, overrides={**(overrides or {}), "train.seed": seed,
                                             "name": f"{name or recipe.stem}-s{seed}"})
    started = time.perf_counter()
    result = train(cfg, checkpoints_root=workdir / "checkpoints")
    train_s = time.perf_counter() - started
    paths = RunPaths(cfg.name, checkpoints_root=workdir / "checkpoints", reports_root=workdir / "reports")
    out = evaluate_run(paths, split="test", explain=False, n_boot=200, progress=False)
    m = out["metrics"]
    return {"seed": seed, "test_acc": m["accuracy"]["value"], "test_auc": m["roc_auc"]["value"],
            "best_epoch": result.best_epoch, "val_score": result.best_score,
            "minutes": round((time.perf_counter() - started) / 60, 2),
            "train_minutes": round(train_s / 60, 2), "load": os.getloadavg()}


def summarise(recipe: Path, seeds: list[dict], command: str) -> dict:
    accs = [s["test_acc"] for s in seeds]
    aucs = [s["test_auc"] for s in seeds]
    sd = (lambda xs: statistics.stdev(xs) if len(xs) > 1 else 0.0)
    return {"recipe": str(recipe.relative_to(REPO)) if recipe.is_relative_to(REPO) else str(recipe),
            "test_acc_mean": round(statistics.mean(accs), 4), "test_acc_std": round(sd(accs), 4),
            "test_auc_mean": round(statistics.mean(aucs), 4), "test_auc_std": round(sd(aucs), 4),
            "seeds": [s["seed"] for s in seeds],
            "minutes_per_seed": round(statistics.mean(s["minutes"] for s in seeds), 2),
            "command": command, "per_seed": seeds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "quality.json")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the trained run folders under DIR (default: a temporary folder)")
    args = parser.parse_args()
    command = " ".join(["python", *sys.argv])
    torch.set_num_threads(os.cpu_count() or 1)
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    results = existing.get("recipes", {})
    with tempfile.TemporaryDirectory(prefix="xreport-quality-") as tmp:
        workdir = args.keep.resolve() if args.keep else Path(tmp)
        for recipe in map(Path.resolve, args.recipes):
            # Seeds run before (and not re-run now) stay: runs of one recipe merge by seed.
            earlier = results.get(recipe.stem, {}).get("per_seed", [])
            seeds = [row for row in earlier if row["seed"] not in args.seeds]
            for seed in args.seeds:
                row = run_seed(recipe, seed, workdir)
                print(json.dumps({"recipe": recipe.stem, **row}), flush=True)
                seeds = sorted([*seeds, row], key=lambda r: r["seed"])
                results[recipe.stem] = summarise(recipe, seeds, command)
                payload = {"date": dt.date.today().isoformat(), "machine": machine(),
                           "published": PUBLISHED, "recipes": results}
                runs.write_text(args.out, json.dumps(payload, indent=2) + "\n")  # atomic, makes parents
    print(json.dumps({k: {x: v[x] for x in ("test_acc_mean", "test_acc_std", "test_auc_mean",
                                               "test_auc_std", "minutes_per_seed")}
                      for k, v in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
