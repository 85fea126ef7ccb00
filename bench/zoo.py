"""Defaults only, on several data sets: what `xreport train --dataset X` gives a new user.

Each set is trained with nothing but its path (the auto recipe chooses the rest from the
data), selected on its validation split, and tested once; bench/results/zoo.json is merged
per set and seed and rewritten after every seed, so a stopped run keeps what it finished.

    .venv/bin/python bench/zoo.py --sets pneumoniamnist retinamnist wbc --seeds 0 1 2
    .venv/bin/python bench/zoo.py --sets retinamnist --variant ce     # plain softmax head
    .venv/bin/python bench/zoo.py --smoke --out /tmp/zoo.json          # 2 steps, synthetic

A variant changes one key against the defaults and is stored as "<set>+<variant>".

Model choice on a small val split (issue 21) is measured paired, inside each defaults run:
weight averaging does not feed back into training, so the trained (raw) weights follow the
same trajectory with or without an EMA beside them. Each epoch both the EMA and the raw
weights are validated, and four choices are kept — {raw, ema} weights x selection on the
epoch's own val figure or on the mean of 3 epochs — each tested once (``arms`` per seed).
The same seed, data order and augmentations in every arm: the differences are the choice's
alone, not seed noise.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

from common import (RESULTS_DIR, command_line, load_average, machine, now,  # noqa: E402
                    synthetic_npz)
from xreport import runs  # noqa: E402
from xreport import train as train_module  # noqa: E402
from xreport.device import torch_threads  # noqa: E402
from xreport.evaluate import evaluate_run  # noqa: E402
from xreport.recipe import resolve  # noqa: E402
from xreport.runs import RunPaths  # noqa: E402
from xreport.train import train  # noqa: E402

# MedMNIST v2 (Yang et al. 2023, Table 3) on the official test splits (../shared/data/README.md).
PUBLISHED = {
    "pneumoniamnist": {"MedMNIST v2 ResNet-18 (28)": {"acc": 0.854, "auc": 0.944},
                       "MedMNIST v2 ResNet-50 (224)": {"acc": 0.884, "auc": 0.962},
                       "MedMNIST v2 Google AutoML Vision": {"acc": 0.946, "auc": 0.991}},
    "retinamnist": {"MedMNIST v2 ResNet-18 (28)": {"acc": 0.524, "auc": 0.717},
                    "MedMNIST v2 ResNet-50 (28)": {"acc": 0.528, "auc": 0.726},
                    "MedMNIST v2 Google AutoML Vision": {"acc": 0.531, "auc": 0.750}},
    "wbc": {},
    # Published figures on this Kaggle set are computed with its train/test leak (README there).
    "brain_mri": {"commonly reported on the leaked split (../shared/data/README.md)": {"acc": 0.95}},
}
TARGETS = {"pneumoniamnist": {"acc": 0.95, "auc": 0.985}, "retinamnist": {"acc": 0.55, "auc": 0.75},
           "wbc": {"acc": 0.90, "auc": 0.98}, "brain_mri": {"acc": 0.95, "auc": 0.99}}
SETS = {"pneumoniamnist": "pneumoniamnist.npz", "retinamnist": "retinamnist.npz", "wbc": "wbc",
        "brain_mri": "brain_mri"}
VARIANTS: dict[str, dict[str, Any]] = {
    # plain softmax head and cross-entropy, whatever the defaults choose for an ordinal task
    "ce": {"model": {"head": "linear"}, "train": {"loss": "cross_entropy"}},
    # the cumulative-link head (one score, ordered thresholds) trained by its likelihood
    "cumlink": {"model": {"head": "ordinal"}, "train": {"loss": "cross_entropy"}},
    # softmax head trained on soft ordinal labels (train.soft_ordinal_targets)
    "soft": {"model": {"head": "linear"}, "train": {"loss": "soft_ordinal"}},
    # the same without the imbalance sampler the defaults choose from the class ratio
    "soft-nosampler": {"model": {"head": "linear"}, "train": {"loss": "soft_ordinal", "imbalance": "none"}},
    "ce-nosampler": {"model": {"head": "linear"}, "train": {"loss": "cross_entropy", "imbalance": "none"}},
    # the model choice of a large val split (no weight average, the epoch's own val figure)
    "noavg": {"train": {"weight_averaging": "none", "select_smoothing": 1}},
    # the symmetries of content with no up or down (cells, skin, fundus): every flip and angle
    "dihedral": {"augment": {"hflip": 0.5, "vflip": 0.5, "rotation": 180.0}},
    # 28 px inputs upsampled to 56 px (the recipe then fits fewer epochs into the budget)
    "up2": {"image_size": 56},
    # batch mixing (augment.mixup / augment.cutmix), the usual small-set strengths
    "mixup": {"augment": {"mixup": 0.2}},
    "cutmix": {"augment": {"cutmix": 1.0}},
    # augmentation strength: the recipe's flips only, no rotation, shift, zoom or intensity jitter
    "light": {"augment": {"rotation": 0.0, "translate": 0.0, "scale": 0.0, "brightness": 0.0, "contrast": 0.0}},
}


def data_dir() -> Path:
    return Path(os.environ.get("XREPORT_DATA_DIR") or REPO.parent / "shared" / "data")


ARM_WINDOWS = (1, 3)     # selection on the epoch's own val figure / on the mean of 3 epochs


class PairedArms:
    """Validates the raw weights beside the weight average every epoch and keeps, for each
    arm (weights, window), the weights of the epoch that arm would select."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.history: dict[str, list[dict[str, float]]] = {"raw": [], "ema": []}
        self.best: dict[str, tuple[float, int, dict[str, torch.Tensor]]] = {}

    def observe(self, weights: str, row: dict[str, float], model: torch.nn.Module) -> None:
        self.history[weights].append(row)
        epoch = len(self.history[weights])
        for window in ARM_WINDOWS:
            arm = f"{weights}-w{window}"
            score = train_module.smoothed_score(self.history[weights], self.metric, window)
            best = self.best.get(arm)
            if best is None or train_module._better(score, best[0], self.metric):
                state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                self.best[arm] = (score, epoch, state)

    def __call__(self, end: train_module.EpochEnd) -> None:
        """The training's epoch hook: the averaged model was validated for the history row;
        the raw weights get their own pass on the same val split."""
        if end.validated is not end.trained:
            self.observe("ema", end.row, end.validated)
            self.observe("raw", end.validate(end.trained), end.trained)


def _test_metrics(evaluation: dict[str, Any]) -> dict[str, Any]:
    m = evaluation["metrics"]
    ordinal = m.get("ordinal") or {}
    # The test split without the images that duplicate train/val images, when any do.
    dedup = evaluation.get("deduplicated") or {}
    kept = dedup.get("metrics") or {}
    return {"test_acc": m["accuracy"]["value"], "test_auc": m["roc_auc"]["value"],
            "test_bacc": m["balanced_accuracy"]["value"],
            "test_qwk": (ordinal.get("qwk") or {}).get("value"),
            "test_duplicates_removed": dedup.get("removed", 0),
            "test_acc_dedup": (kept.get("accuracy") or {}).get("value"),
            "test_auc_dedup": (kept.get("roc_auc") or {}).get("value")}


DEFAULT_ARM = "ema-w3"    # what the recipe chooses below 1000 val images: the run's own best.pt


def _test_arm(paths: RunPaths, arm: str, epoch: int, state: dict[str, torch.Tensor],
              workdir: Path, best_meta: dict[str, object]) -> dict[str, Any]:
    """Test ``state`` as if it were the run's best.pt: a copy of the run folder whose best.pt
    holds those weights (``best_meta``, the real best.pt's, with the epoch changed)."""
    name = f"{paths.run_dir.name}-{arm}"
    target = workdir / "checkpoints" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(paths.run_dir, target)
    meta = copy.deepcopy(best_meta)
    meta["epoch"] = epoch
    (target / paths.best.name).write_bytes(runs.checkpoint_bytes(state_dict=state, meta=meta))
    arm_paths = RunPaths(name, checkpoints_root=workdir / "checkpoints", reports_root=workdir / "reports")
    evaluation = evaluate_run(arm_paths, split="test", explain=False, n_boot=50, progress=False)
    shutil.rmtree(target, ignore_errors=True)
    return {"epoch": epoch, **_test_metrics(evaluation)}


def run_seed(name: str, dataset: Path, seed: int, workdir: Path, *,
             extra: dict[str, Any] | None = None, recipe_threads: int = 0) -> dict[str, Any]:
    """Train on ``dataset`` with the defaults (plus ``extra`` raw keys), test once; when the
    recipe averages weights, the paired model-choice arms are tested too."""
    raw: dict[str, Any] = {"name": f"zoo-{name}-s{seed}", "data": {"dataset": str(dataset)},
                           "train": {"seed": seed}}
    for section, values in (extra or {}).items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values     # a top-level key (image_size)
    load_before = load_average()
    started = time.perf_counter()
    # The recipe sees the machine's cores, as a plain `xreport train` would, whatever
    # --threads the training itself runs with (several zoo processes share the cores).
    with torch_threads(recipe_threads):
        resolved = resolve(raw, source=f"zoo {name}")
    arms = PairedArms(resolved.config.train.select_metric)
    result = train(resolved.config, checkpoints_root=workdir / "checkpoints",
                   recipe_choices=resolved.choices, overwrite=True, on_epoch_end=arms)
    train_s = time.perf_counter() - started
    paths = RunPaths(resolved.config.name, checkpoints_root=workdir / "checkpoints",
                     reports_root=workdir / "reports")
    evaluation = evaluate_run(paths, split="test", explain=False, n_boot=200, progress=False)
    minutes = round((time.perf_counter() - started) / 60, 2)
    tested = _test_metrics(evaluation)
    best_meta = runs.load_checkpoint(paths.best).meta if arms.best else {}
    # The default arm is best.pt itself, already tested above: reused, not tested again.
    arm_results = {arm: ({"epoch": epoch, **tested} if arm == DEFAULT_ARM and epoch == result.best_epoch
                         else _test_arm(paths, arm, epoch, state, workdir, best_meta))
                   for arm, (_, epoch, state) in sorted(arms.best.items())}
    return {"seed": seed, **tested,
            "arms": arm_results,
            "best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "val_score": result.best_score, "selected_by": resolved.config.train.select_metric,
            "minutes": minutes,
            "train_minutes": round(train_s / 60, 2),
            "load_before": load_before, "load_after": load_average(),
            "chosen": [c for c in resolved.choices if c["rule"] != "base"]}


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.mean(values), 4) if values else None


def _sd(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.stdev(values), 4) if len(values) > 1 else None


def summarise(base: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = {f"test_{k}_{s}": f(rows, f"test_{k}") for k in ("acc", "auc", "bacc", "qwk", "acc_dedup", "auc_dedup")
           for s, f in (("mean", _mean), ("sd", _sd))}
    # Every seed does the same work (the recipe fixes the epochs), so the fastest seed is the
    # one least slowed by other jobs on the machine: that is the figure per seed; the mean
    # over all seeds is kept beside it.
    arm_names = sorted({a for r in rows for a in r.get("arms", {})})
    arms = {a: {f"test_{k}_mean": _mean([r["arms"][a] for r in rows if a in r.get("arms", {})], f"test_{k}")
                for k in ("acc", "auc", "bacc", "qwk", "acc_dedup", "auc_dedup")}
            for a in arm_names}
    return {**out, "arms": arms, "minutes_per_seed": min(r["minutes"] for r in rows),
            "minutes_per_seed_mean": _mean(rows, "minutes"), "seeds": [r["seed"] for r in rows],
            "chosen": rows[0]["chosen"], "published": PUBLISHED.get(base, {}),
            "target": TARGETS.get(base), "per_seed": rows}


def _read_sets(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()).get("sets", {}) if path.exists() else {}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` for one read-merge-write."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def markdown_table(sets: dict[str, Any], names: list[str]) -> str:
    """The BENCHMARKS.md rows of ``names``: means of the seeds, per-seed figures, the paired
    model-choice arms (test ACC / AUC means) and the target."""
    def f(v: Any) -> str:
        return "—" if v is None else f"{v:.3f}"

    lines = ["| set | seeds | test ACC | test AUC | de-dup. ACC / AUC | QWK | per seed ACC / AUC | "
             "arms ACC / AUC: ema-w1, ema-w3 (the default), raw-w1, raw-w3 | min / seed (fastest) | target |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |"]
    for name in names:
        s = sets.get(name)
        if not s:
            continue
        seeds = ", ".join(f"s{r['seed']}: {f(r['test_acc'])} / {f(r['test_auc'])}" for r in s["per_seed"])
        arms = ", ".join(f"{f(a['test_acc_mean'])} / {f(a['test_auc_mean'])}"
                         for _, a in sorted(s.get("arms", {}).items()))
        target = s.get("target") or {}
        lines.append(
            f"| {name} | {len(s['per_seed'])} | {f(s['test_acc_mean'])} ± {f(s['test_acc_sd'])} | "
            f"{f(s['test_auc_mean'])} ± {f(s['test_auc_sd'])} | "
            f"{f(s.get('test_acc_dedup_mean'))} / {f(s.get('test_auc_dedup_mean'))} | {f(s.get('test_qwk_mean'))} | "
            f"{seeds} | {arms or '—'} | {s['minutes_per_seed']:.1f} | "
            f"{f(target.get('acc'))} / {f(target.get('auc'))} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variant", choices=list(VARIANTS), help="one change against the defaults")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 on a shared, loaded machine: spin-waits cost more)")
    parser.add_argument("--recipe-threads", type=int, default=os.cpu_count() or 1,
                        help="the threads the auto recipe budgets for (default: this machine's cores)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the run folders under DIR")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "zoo.json")
    parser.add_argument("--smoke", action="store_true",
                        help="synthetic 28 px data, 2 optimiser steps: checks the script runs")
    parser.add_argument("--table", action="store_true", help="print --out's sets as a Markdown table and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(_read_sets(args.out), args.sets))
        return 0
    torch.set_num_threads(args.threads)
    results = _read_sets(args.out) if not args.smoke else {}
    started_load = load_average()
    with tempfile.TemporaryDirectory(prefix="xreport-zoo-") as tmp:
        workdir = args.keep.resolve() if args.keep else Path(tmp)
        todo = ([("synthetic", synthetic_npz(Path(tmp) / "synthetic.npz", n_train=64, n_val=32,
                                             n_test=32))] if args.smoke
                else [(s, data_dir() / SETS[s]) for s in args.sets])
        extra = dict(VARIANTS[args.variant]) if args.variant else {}
        if args.smoke:
            extra["train"] = {**extra.get("train", {}), "max_steps": 2, "epochs": 1}
        for base, dataset in todo:
            key = f"{base}+{args.variant}" if args.variant else base
            for seed in (args.seeds[:1] if args.smoke else args.seeds):
                row = run_seed(key.replace("+", "-"), dataset, seed, workdir, extra=extra,
                               recipe_threads=args.recipe_threads)
                print(json.dumps({"set": key, **{k: v for k, v in row.items() if k != "chosen"}}),
                      flush=True)
                with _locked(args.out):
                    # Other zoo processes (other sets or seeds, run at the same time) may have
                    # written since: merge this seed into what the file holds now.
                    results = _read_sets(args.out) if not args.smoke else {}
                    others = [r for r in results.get(key, {}).get("per_seed", []) if r["seed"] != seed]
                    results[key] = summarise(base, sorted([*others, row], key=lambda r: r["seed"]))
                    payload = {"benchmark": "zoo", "date": now(), "command": command_line(),
                               "smoke": args.smoke, "threads": args.threads,
                               "recipe_threads": args.recipe_threads, "machine": machine(),
                               "load_average_start": started_load, "load_average_end": load_average(),
                               "note": "the recipe budgets for recipe_threads; each process trains with "
                                       "threads, and the machine is shared with other jobs: minutes "
                                       "are upper bounds of a quiet 2-core run",
                               "sets": results}
                    runs.write_json(args.out, payload)
    print(json.dumps({k: {x: v[x] for x in ("test_acc_mean", "test_auc_mean", "test_qwk_mean",
                                            "minutes_per_seed")} for k, v in results.items()},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
