"""`xreport build` end to end (cold and cached) and how evaluation grows with the test split.

1. Trains a small checkpoint on PneumoniaMNIST (28 px, one epoch cut to --train-steps steps).
2. `xreport build` on the 624 test images: cold (no reports folder) and cached (predictions
   reused), interleaved for --rounds rounds.
3. `xreport evaluate --data` on the test split repeated to 624, 2,500 and 10,000 images (a
   temporary .npz under /tmp): wall time and peak RSS of each child process (wait4), sizes
   interleaved for --rounds rounds. Time should grow linearly and memory stay flat: predictions
   are streamed in batches and CAMs are computed only for the gallery and the faithfulness sample.

    .venv/bin/python bench/build_scale.py [--rounds 2] [--sizes 624,2500,10000] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import common

RESULTS = common.RESULTS_DIR / "build_scale.json"
RUN = "scalebench"


def repeated_npz(source: Path, out: Path, *, n_test: int) -> Path:
    """``source``'s test split tiled to ``n_test`` images; val kept, train cut to val's size
    (evaluate --data reads only the test split, but the file keeps the MedMNIST layout)."""
    with np.load(source) as npz:
        test_x, test_y = npz["test_images"], npz["test_labels"]
        val_x, val_y = npz["val_images"], npz["val_labels"]
    reps = -(-n_test // len(test_x))
    np.savez(out, train_images=val_x, train_labels=val_y, val_images=val_x, val_labels=val_y,
             test_images=np.concatenate([test_x] * reps)[:n_test],
             test_labels=np.concatenate([test_y] * reps)[:n_test])
    return out


def linear_fit(sizes: list[int], seconds: list[float]) -> dict[str, float]:
    """seconds = fixed + per_1000 * n / 1000, with the largest relative residual."""
    slope, intercept = np.polyfit(np.asarray(sizes, float), np.asarray(seconds, float), 1)
    predicted = intercept + slope * np.asarray(sizes, float)
    worst = float(np.max(np.abs(predicted - seconds) / np.asarray(seconds)))
    return {"fixed_s": round(float(intercept), 2), "per_1000_images_s": round(float(slope) * 1000, 2),
            "max_relative_residual": round(worst, 3)}


def build_rounds(roots: list[str], *, rounds: int, build_args: list[str], reports: Path) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = {"cold": [], "cached": []}
    for r in range(rounds):
        shutil.rmtree(reports / RUN, ignore_errors=True)
        for kind in ("cold", "cached"):
            child = common.run_child(common.xreport_argv("build", "--run", RUN, *roots, *build_args))
            out[kind].append(child.as_dict())
            print(f"round {r + 1}/{rounds}  build {kind:<7} {child.seconds:7.1f} s  "
                  f"peak RSS {child.peak_rss_mib:7.0f} MiB", flush=True)
    best = {k: min(v["seconds"] for v in runs) for k, runs in out.items()}
    return {"command": " ".join(["xreport", "build", "--run", RUN, *build_args]),
            "best_seconds": best, "cold_over_cached": round(best["cold"] / best["cached"], 2),
            "rounds": out}


def scale_rounds(files: dict[int, Path], roots: list[str], *, rounds: int,
                 reports: Path) -> dict[str, Any]:
    per_size: dict[int, list[dict[str, Any]]] = {n: [] for n in files}
    for r in range(rounds):
        for n, npz in files.items():
            child = common.run_child(common.xreport_argv("evaluate", "--run", RUN, "--data", str(npz),
                                                         "--device", "cpu", *roots))
            timings = json.loads((reports / RUN / "metrics.json").read_text())["timings"]
            per_size[n].append(child.as_dict() | {"timings": timings})
            print(f"round {r + 1}/{rounds}  evaluate n={n:<6} {child.seconds:7.1f} s  "
                  f"peak RSS {child.peak_rss_mib:7.0f} MiB  {timings}", flush=True)
    sizes = sorted(per_size)
    best_s = [min(x["seconds"] for x in per_size[n]) for n in sizes]
    rss = [max(x["peak_rss_mib"] for x in per_size[n]) for n in sizes]
    return {"command": f"xreport evaluate --run {RUN} --data /tmp/.../repeated_N.npz --device cpu",
            "sizes": sizes, "best_seconds": dict(zip(map(str, sizes), best_s)),
            "peak_rss_mib": dict(zip(map(str, sizes), rss)),
            "time_ratio_vs_smallest": {str(n): round(s / best_s[0], 2) for n, s in zip(sizes, best_s)},
            "size_ratio_vs_smallest": {str(n): round(n / sizes[0], 2) for n in sizes},
            "rss_ratio_largest_vs_smallest": round(rss[-1] / rss[0], 2),
            "linear_fit": linear_fit(sizes, best_s),
            "rounds": {str(n): v for n, v in per_size.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a MedMNIST .npz (default: pneumoniamnist.npz)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="624,2500,10000")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long check on random images (HTML in English only)")
    args = parser.parse_args()
    started = common.load_average()
    build_args = ["--device", "cpu"]
    with tempfile.TemporaryDirectory(prefix="xreport-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data = args.data or common.find_pneumoniamnist()
        if args.smoke:
            data = common.synthetic_npz(tmp / "smoke.npz", n_train=32, n_val=24, n_test=40)
            args.rounds, args.sizes, args.train_steps = 1, "40,80", 1
            build_args += ["--lang", "en", "--format", "html"]
        elif data is None:
            sys.exit("pneumoniamnist.npz not found: set $XREPORT_DATA_DIR or pass --data")
        roots = ["--checkpoints", str(tmp / "ck"), "--reports", str(tmp / "rep")]
        trained = common.train_tiny_run(data, name=RUN, checkpoints=tmp / "ck", max_steps=args.train_steps)
        print(f"trained {RUN} in {trained.seconds:.1f} s", flush=True)
        build = build_rounds(roots, rounds=args.rounds, build_args=build_args, reports=tmp / "rep")
        files = {n: repeated_npz(data, tmp / f"repeated_{n}.npz", n_test=n)
                 for n in sorted(int(s) for s in args.sizes.split(","))}
        scale = scale_rounds(files, roots, rounds=args.rounds, reports=tmp / "rep")
    body = {"setup": {"data": str(data), "image_size": 28, "train_steps": args.train_steps,
                      "rounds": args.rounds, "train_seconds": round(trained.seconds, 2)},
            "build_test_split": build, "evaluate_scale": scale, "smoke": args.smoke}
    common.write_result(args.out, benchmark="build_scale", started_load=started, body=body)
    print(json.dumps({"build": build["best_seconds"], "scale": scale["best_seconds"],
                      "rss": scale["peak_rss_mib"], "fit": scale["linear_fit"]}))


if __name__ == "__main__":
    main()
