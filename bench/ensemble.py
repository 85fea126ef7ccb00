"""Seed ensembles, measured: the kept zoo runs of one set (same data, same defaults, different
seeds) averaged into one prediction, against each seed alone.

For every set under ``--runs DIR`` (what ``bench/zoo.py --keep DIR`` writes: runs named
zoo-<set>-s<seed>), each run predicts its own test split once (with the run's own
preprocessing, TTA off and on: the views its training augmentation declared valid); the
ensemble averages the seeds' class probabilities. Metrics are xreport's own
(``metrics.compute_all``), so the figures compare with zoo.json's. An ensemble of k seeds
costs k trainings: it is the lever "more training compute", and the table says so.

    .venv/bin/python bench/ensemble.py --runs /tmp/zoo-runs     # -> bench/results/ensemble.json
    .venv/bin/python bench/ensemble.py --smoke --out /tmp/ens.json
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import RESULTS_DIR, command_line, load_average, machine, now  # noqa: E402
from xreport import metrics, runs  # noqa: E402
from xreport.device import resolve_device  # noqa: E402
from xreport.evaluate import dataset_for_run, load_run, predict, views_for  # noqa: E402
from xreport.runs import RunPaths  # noqa: E402

ZOO_NAME = re.compile(r"^zoo-(?P<set>.+)-s(?P<seed>\d+)$")


def _figures(y: np.ndarray, probs: np.ndarray, *, class_names: list[str], task: str) -> dict[str, float | None]:
    m = metrics.compute_all(y, probs, class_names=class_names, task=task, n_boot=0)
    qwk = (m.get("ordinal") or {}).get("qwk") or {}
    return {"acc": round(m["accuracy"]["value"], 4), "auc": round(m["roc_auc"]["value"], 4),
            "qwk": round(qwk["value"], 4) if qwk.get("value") is not None else None}


def set_rows(root: Path, names: list[str], device: torch.device) -> dict[str, Any]:
    """One set's seeds alone and averaged, TTA off and on."""
    probs: dict[str, list[np.ndarray]] = {"off": [], "on": []}
    per_seed: list[dict[str, Any]] = []
    y = None
    for name in names:
        run = load_run(RunPaths(name, checkpoints_root=root / "checkpoints"), device=device)
        split = dataset_for_run(run, splits=["test"]).splits["test"]
        labels = split.known_labels().numpy()
        if y is not None and not np.array_equal(y, labels):
            raise SystemExit(f"{name}: its test split differs from the other seeds'")
        y = labels
        class_names, task = list(run.meta["class_names"]), str(run.meta["task"])
        row: dict[str, Any] = {"run": name}
        for tta in ("off", "on"):
            views = views_for(run, tta, image_shape=split.images.shape[1:])
            p = predict(run.model, split.images, mean=run.meta["mean"], std=run.meta["std"], device=device,
                        views=views, progress=False)
            probs[tta].append(p)
            row[tta] = _figures(labels, p, class_names=class_names, task=task)
            row[f"views_{tta}"] = len(views)
        per_seed.append(row)
    assert y is not None
    out: dict[str, Any] = {"seeds": len(names), "per_seed": per_seed}
    for tta in ("off", "on"):
        alone = [r[tta] for r in per_seed]
        out[f"single_{tta}_mean"] = {k: (round(statistics.mean(a[k] for a in alone), 4)
                                         if alone[0][k] is not None else None) for k in ("acc", "auc", "qwk")}
        out[f"ensemble_{tta}"] = _figures(y, np.mean(probs[tta], axis=0), class_names=class_names, task=task)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, metavar="DIR", help="the DIR of `bench/zoo.py --keep DIR`")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ensemble.json")
    parser.add_argument("--smoke", action="store_true", help="two tiny synthetic runs (tests)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = load_average()
    with tempfile.TemporaryDirectory(prefix="xreport-ensemble-") as tmp:
        if args.smoke:
            from tta import smoke_runs
            root = Path(tmp) / "kept"
            smoke_runs(root)
        elif args.runs is None:
            parser.error("give --runs DIR (or --smoke)")
        else:
            root = args.runs.resolve()
        names = sorted(p.parent.name for p in (root / "checkpoints").glob("*/best.pt"))
        groups: dict[str, list[str]] = {}
        for name in names:
            found = ZOO_NAME.match(name)
            groups.setdefault(found["set"] if found else name, []).append(name)
        device = resolve_device(args.device)
        sets = {s: set_rows(root, members, device) for s, members in sorted(groups.items())}
    runs.write_json(args.out, {"benchmark": "ensemble", "date": now(), "command": command_line(),
                               "smoke": args.smoke, "machine": machine(), "runs_dir": str(args.runs),
                               "load_average_start": started, "load_average_end": load_average(),
                               "note": "each set's seeds alone (mean) and averaged into one prediction; "
                                       "an ensemble of k seeds costs k trainings", "sets": sets})
    for name, s in sets.items():
        print(name, "single", s["single_off_mean"], "ensemble", s["ensemble_off"],
              "| TTA single", s["single_on_mean"], "ensemble", s["ensemble_on"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
