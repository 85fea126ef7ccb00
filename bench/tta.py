"""Test-time augmentation, paired: each kept zoo run's test split with TTA off and on.

The same checkpoint, data and metrics code on both sides; only the views averaged differ
(those the run's own training augmentation declared valid: data.augment.tta_views), so the
per-run difference is TTA's alone. A run trained without flips or quarter turns has only the
identity: its "on" is its "off" (listed with ``views`` ["identity"], difference 0).

    .venv/bin/python bench/zoo.py --sets wbc --seeds 0 1 2 --keep /tmp/zoo-runs
    .venv/bin/python bench/tta.py --runs /tmp/zoo-runs          # -> bench/results/tta.json
    .venv/bin/python bench/tta.py --smoke --out /tmp/tta.json   # 2 tiny synthetic runs

``--runs DIR`` reads every DIR/checkpoints/<run>/ (what zoo.py --keep writes: runs named
zoo-<set>-s<seed>); the evaluations go to a temporary folder, never over the kept reports.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

from common import RESULTS_DIR, command_line, load_average, machine, now, synthetic_npz  # noqa: E402
from zoo import VARIANTS, _test_metrics  # noqa: E402
from xreport import runs  # noqa: E402
from xreport.device import resolve_device  # noqa: E402
from xreport.evaluate import evaluate_run, load_run  # noqa: E402
from xreport.runs import RunPaths  # noqa: E402

# The figures compared, as zoo._test_metrics names them (qwk is None for an unordered task).
KEYS = ("test_acc", "test_auc", "test_bacc", "test_qwk")
ZOO_NAME = re.compile(r"^zoo-(?P<set>.+)-s(?P<seed>\d+)$")


def run_names(root: Path) -> list[str]:
    """The kept runs under ``root``/checkpoints that have a best.pt, sorted."""
    folder = root / "checkpoints"
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no such folder (give the DIR of `bench/zoo.py --keep DIR`)")
    return sorted(p.parent.name for p in folder.glob("*/best.pt"))


def paired(root: Path, name: str, workdir: Path, *, device: str = "cpu", n_boot: int = 200) -> dict[str, Any]:
    """One run's test metrics with TTA off and on (one loaded model for both)."""
    paths = RunPaths(name, checkpoints_root=root / "checkpoints", reports_root=workdir / "reports")
    run = load_run(paths, device=resolve_device(device))
    found = ZOO_NAME.match(name)
    row: dict[str, Any] = {"run": name, "set": found["set"] if found else name,
                           "seed": int(found["seed"]) if found else run.config.train.seed}
    for tta in ("off", "on"):
        out = runs.EvaluationPaths(workdir / name / tta, name)
        evaluation = evaluate_run(paths, split="test", device=device, tta=tta, explain=False,
                                  n_boot=n_boot, run=run, out=out, progress=False)
        row[tta] = _test_metrics(dict(evaluation))
        row[f"seconds_{tta}"] = evaluation.get("timings", {}).get("predict")
        if tta == "on":
            row["views"] = evaluation["tta_views"]
    row["diff"] = {k: (round(row["on"][k] - row["off"][k], 4)
                       if row["on"].get(k) is not None and row["off"].get(k) is not None else None)
                   for k in (*KEYS, "test_acc_dedup", "test_auc_dedup")}
    return row


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.mean(kept), 4) if kept else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per set: the seeds, the views, and the means of off, on and their paired difference."""
    sets: dict[str, Any] = {}
    for name in sorted({r["set"] for r in rows}):
        mine = sorted((r for r in rows if r["set"] == name), key=lambda r: r["seed"])
        sets[name] = {
            "seeds": [r["seed"] for r in mine],
            "views": [list(v) for v in sorted({tuple(r["views"]) for r in mine})],
            **{f"{k}_off_mean": _mean([r["off"][k] for r in mine]) for k in KEYS},
            **{f"{k}_on_mean": _mean([r["on"][k] for r in mine]) for k in KEYS},
            **{f"{k}_diff_mean": _mean([r["diff"][k] for r in mine]) for k in KEYS},
            # How many seeds TTA helped / hurt on AUC (the lever is adopted only if seeds agree).
            "auc_better_seeds": sum(1 for r in mine if (r["diff"]["test_auc"] or 0) > 0),
            "auc_worse_seeds": sum(1 for r in mine if (r["diff"]["test_auc"] or 0) < 0),
        }
    return sets


def smoke_runs(root: Path) -> None:
    """Two 2-step runs on synthetic 28 px grey data, named as zoo.py names them: the defaults
    (whatever flips the recipe chooses for grey images) and zoo's 'dihedral' variant (8 views)."""
    from xreport.recipe import resolve
    from xreport.train import train

    root.mkdir(parents=True, exist_ok=True)
    data = synthetic_npz(root / "synthetic.npz", n_train=64, n_val=32, n_test=32)
    for variant in (None, "dihedral"):
        key = "synthetic" + (f"-{variant}" if variant else "")
        raw: dict[str, Any] = {"name": f"zoo-{key}-s0", "data": {"dataset": str(data)},
                               "train": {"seed": 0, "max_steps": 2, "epochs": 1}}
        for section, values in (VARIANTS[variant] if variant else {}).items():
            raw.setdefault(section, {}).update(values)
        resolved = resolve(raw, source=f"tta smoke {key}")
        train(resolved.config, checkpoints_root=root / "checkpoints", recipe_choices=resolved.choices,
              overwrite=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, metavar="DIR", help="the DIR of `bench/zoo.py --keep DIR`")
    parser.add_argument("--only", nargs="+", metavar="RUN", help="only these run names")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "tta.json")
    parser.add_argument("--smoke", action="store_true", help="train 2 tiny synthetic runs and pair them")
    args = parser.parse_args()
    if not args.smoke and args.runs is None:
        parser.error("give --runs DIR (or --smoke)")
    torch.set_num_threads(args.threads)
    started_load = load_average()
    with tempfile.TemporaryDirectory(prefix="xreport-tta-") as tmp:
        root = args.runs.resolve() if args.runs else Path(tmp) / "kept"
        if args.smoke:
            smoke_runs(root)
        names = [n for n in run_names(root) if not args.only or n in args.only]
        rows = []
        for name in names:
            row = paired(root, name, Path(tmp) / "evaluations", device=args.device)
            print(json.dumps(row), flush=True)
            rows.append(row)
    payload = {"benchmark": "tta", "date": now(), "command": command_line(), "smoke": args.smoke,
               "threads": args.threads, "machine": machine(), "runs_dir": str(args.runs) if args.runs else None,
               "load_average_start": started_load, "load_average_end": load_average(),
               "note": "paired: each run's test split with TTA off and on (the views its training "
                       "augmentation declared valid); diff = on - off",
               "sets": summarise(rows), "per_run": rows}
    runs.write_json(args.out, payload)
    print(json.dumps({k: {x: v[x] for x in ("views", "test_acc_diff_mean", "test_auc_diff_mean")}
                      for k, v in payload["sets"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
