"""How `xreport build` grows with the input size and the test split, and ROAD's imputation
against the reference algorithm.

1. For each input size (--sizes, px) a phantom chest-film data set (xreport.data.phantom,
   grey, 2 classes) is written as a MedMNIST-layout .npz with the largest test split asked
   for; a ``resnet_tiny`` checkpoint (xreport's ~80k-weight ResNet, 1 BasicBlock per stage)
   is trained on it for --train-steps steps. A tiny model keeps the forward passes cheap, so
   the figures show what grows with the resolution in xreport itself (imputation, CAMs,
   figures, PDFs), not ResNet-18's convolutions.
2. For each test-split size (--images) a cold `xreport build --explain full` (HTML + en and
   zh-TW PDFs, the full explanation protocol) runs as a child process: wall seconds, peak
   RSS (wait4) and metrics.json's stage timings.
3. ROAD imputation per image (3 channels, blob-like removals of 10-90%, one torch thread) at --impute-sizes:
   xreport's multigrid solver, the plain CG solver it replaced, and the reference algorithm
   (pytorch_grad_cam's NoisyLinearImputer: scipy spsolve, one image at a time), with the
   largest difference from the reference.

Writes bench/results/build_growth.json: {"runs": [{"size", "images", "seconds",
"peak_rss_mb", ...}], "imputation": [...], machine info (lscpu flags, nproc, load)}.
The machine may be shared: every record keeps the load average before and after it.

    nice .venv/bin/python bench/build_growth.py [--sizes 28,64,128,224] [--images 64,624] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import common
from xreport import explain
from xreport.data import phantom

RESULTS = common.RESULTS_DIR / "build_growth.json"




def phantom_npz(path: Path, *, size: int, n_test: int, n_train: int = 96, n_val: int = 48) -> Path:
    """Phantom films in the MedMNIST .npz layout (grey (N, S, S) uint8, labels (N, 1))."""
    arrays: dict[str, np.ndarray] = {}
    for i, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        images, labels, _ = phantom.generate(n, size=size, seed=100 + i)
        arrays[f"{split}_images"] = images[:, 0]
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


def cut_test(source: Path, out: Path, n_test: int) -> Path:
    with np.load(source) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["test_images"], arrays["test_labels"] = arrays["test_images"][:n_test], arrays["test_labels"][:n_test]
    np.savez(out, **arrays)
    return out


def build_runs(cases: list[tuple[int, int]], *, tmp: Path, train_steps: int,
               build_args: list[str], records: list[dict[str, Any]],
               save: Callable[[], None]) -> None:
    """Appends one record per (size, test images) case, in the order given, to ``records``,
    saving after each: a long run interrupted (or still going) keeps what it measured."""
    most = max(n for _, n in cases)
    for size, n in cases:
        full = tmp / f"phantom_{size}.npz"
        if not full.is_file():
            phantom_npz(full, size=size, n_test=most)
        # One checkpoint per test-split size: a run names its data set, and builds on its own.
        data = cut_test(full, tmp / f"phantom_{size}_{n}.npz", n)
        ck, reports = tmp / f"ck{size}_{n}", tmp / f"rep{size}_{n}"
        trained = common.run_child(common.xreport_argv(
            "train", "--dataset", str(data), "--name", "growth", "--arch", "resnet_tiny",
            "--image-size", str(size), "--epochs", "1", "--max-steps", str(train_steps),
            "--batch-size", "32", "--device", "cpu", "--checkpoints", str(ck), "--overwrite"))
        child = common.run_child(common.xreport_argv(
            "build", "--run", "growth", "--checkpoints", str(ck), "--reports", str(reports),
            *build_args))
        metrics = json.loads((reports / "growth" / "metrics.json").read_text())
        explained = metrics.get("explain") or {}
        record = {"size": size, "images": n, "seconds": round(child.seconds, 2),
                  "peak_rss_mb": round(child.peak_rss_mib, 1), "cpu_seconds": round(child.cpu_seconds, 2),
                  "protocol": explained.get("protocol"), "timings": metrics.get("timings", {}),
                  "explain_timings": explained.get("timings", {}),
                  "train_seconds": round(trained.seconds, 2),
                  "load_before": child.load_before, "load_after": child.load_after}
        records.append(record)
        save()
        print(f"{size:4d} px {n:5d} images: {child.seconds:7.1f} s  peak RSS {child.peak_rss_mib:6.0f} MiB  "
              f"load {child.load_before[0]:.1f}->{child.load_after[0]:.1f}  {record['explain_timings']}",
              flush=True)
        shutil.rmtree(reports, ignore_errors=True)
        shutil.rmtree(ck, ignore_errors=True)


def previous_cg_impute(x: torch.Tensor, removed: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    """The solver the multigrid replaced: plain CG from a blurred start, up to 4 max(H, W)
    iterations, depthwise 3x3 convolutions (the baseline of the ratio)."""
    b, c, h, w = x.shape
    u = removed.expand(b, c, h, w)
    known = 1 - u
    kernel = torch.tensor(explain.imputation._NEIGHBOUR_WEIGHTS).expand(c, 1, 3, 3)

    def neighbours(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, padding=1, groups=c)

    degree = neighbours(torch.ones_like(x))

    def system(t: torch.Tensor) -> torch.Tensor:
        return (degree * t - neighbours(t * u)) * u

    rhs = neighbours(x * known) * u
    sigma = max(1.0, min(h, w) / 8)
    num, den = explain.gaussian_blur(x * known, sigma=sigma), explain.gaussian_blur(known, sigma=sigma)
    v = torch.where(den > 1e-3, num / den.clamp(min=1e-3), torch.zeros_like(x)) * u
    r = rhs - system(v)
    p = r.clone()
    rs = (r * r).sum((2, 3), keepdim=True)
    scale = (rhs * rhs).sum((2, 3), keepdim=True).clamp(min=1e-12)
    for it in range(4 * max(h, w)):
        if it % 8 == 0 and bool((rs <= tol * tol * scale).all()):
            break
        ap = system(p)
        alpha = rs / (p * ap).sum((2, 3), keepdim=True).clamp(min=1e-20)
        v, r = v + alpha * p, r - alpha * ap
        rs_new = (r * r).sum((2, 3), keepdim=True)
        p, rs = r + (rs_new / rs.clamp(min=1e-20)) * p, rs_new
    return x * known + v * u


def imputation_timing(sizes: list[int], *, images: int, rounds: int) -> list[dict[str, Any]]:
    """Per-image CPU and wall time of the three solvers on the same images and removals."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    out = []
    for size in sizes:
        films, _, _ = phantom.generate(images, size=size, seed=7)
        x = (torch.from_numpy(films).float() / 255).repeat(1, 3, 1, 1)  # 3 channels, as RGB models see
        ranks = explain.removal._pixel_ranks(explain.random_maps(images, size, size, seed=3), seed=0)
        share = torch.linspace(0.1, 0.9, images)[:, None]
        removed = (ranks < (share * size * size).round()).float().view(images, 1, size, size)
        reference_imputer = NoisyLinearImputer(noise=0.0)
        solvers = {
            "xreport_multigrid": lambda: explain.noisy_linear_impute(x, removed, noise=0.0),
            "previous_cg": lambda: previous_cg_impute(x, removed),
            "reference_spsolve": lambda: torch.stack([reference_imputer(x[i], 1 - removed[i, 0])
                                                      for i in range(images)]),
        }
        results: dict[str, Any] = {}
        outputs: dict[str, torch.Tensor] = {}
        for name, fn in solvers.items():
            best_wall = best_cpu = float("inf")
            load_before = common.load_average()
            for _ in range(rounds):
                wall, cpu = time.perf_counter(), time.process_time()
                outputs[name] = fn()
                best_wall = min(best_wall, time.perf_counter() - wall)
                best_cpu = min(best_cpu, time.process_time() - cpu)
            results[name] = {"threads": torch.get_num_threads(), "wall_ms_per_image": round(best_wall / images * 1000, 2),
                             "cpu_ms_per_image": round(best_cpu / images * 1000, 2),
                             "load_before": load_before, "load_after": common.load_average()}
        ref = outputs["reference_spsolve"]
        record = {"size": size, "images": images, "channels": 3, "solvers": results,
                  "max_abs_diff_vs_reference": {k: float((outputs[k] - ref).abs().max())
                                                for k in ("xreport_multigrid", "previous_cg")},
                  "cpu_speedup_vs_reference": round(results["reference_spsolve"]["cpu_ms_per_image"]
                                                    / results["xreport_multigrid"]["cpu_ms_per_image"], 2),
                  "cpu_speedup_vs_previous": round(results["previous_cg"]["cpu_ms_per_image"]
                                                   / results["xreport_multigrid"]["cpu_ms_per_image"], 2)}
        out.append(record)
        print(f"impute {size:4d} px: " + ", ".join(f"{k} {v['cpu_ms_per_image']:.1f} ms" for k, v in results.items())
              + f"  |diff| {record['max_abs_diff_vs_reference']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="28,64,128,224")
    parser.add_argument("--images", default="64,624")
    parser.add_argument("--cases", help="SIZExIMAGES,... in this order (default: every size with "
                        "every count); the most telling first when time is short")
    parser.add_argument("--impute-sizes", default="28,64,224")
    parser.add_argument("--impute-images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the imputation timing (best kept)")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--explain", default="full", choices=("fast", "full"))
    parser.add_argument("--skip-builds", action="store_true", help="imputation timing only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, HTML in English only (tests)")
    args = parser.parse_args()
    build_args = ["--device", "cpu", "--explain", args.explain]
    if args.smoke:
        args.sizes, args.images, args.impute_sizes, args.impute_images = "24,32", "16,24", "16,24", 4
        args.rounds, args.train_steps = 1, 1
        build_args += ["--lang", "en", "--format", "html"]
    started = common.load_average()
    if args.cases and not args.smoke:
        cases = [(int(a), int(b)) for a, b in (c.split("x") for c in args.cases.split(","))]
    else:
        cases = [(s, n) for s in map(int, args.sizes.split(",")) for n in map(int, args.images.split(","))]
    # One thread: the reference's spsolve is single-threaded, and on a loaded machine torch's
    # spinning OpenMP threads would bill their waiting as CPU time.
    torch.set_num_threads(1)
    impute = imputation_timing([int(s) for s in args.impute_sizes.split(",")], images=args.impute_images,
                               rounds=args.rounds)
    records: list[dict[str, Any]] = []

    def save() -> None:
        common.write_result(args.out, benchmark="build_growth", started_load=started, body={
            "cpu": common.cpu_flags(), "smoke": args.smoke,
            "setup": {"model": "resnet_tiny (xreport.models, ~80k weights), trained --train-steps steps",
                      "data": "phantom films (xreport.data.phantom) as a MedMNIST .npz, grey, 2 classes",
                      "build": "xreport build " + " ".join(build_args), "train_steps": args.train_steps},
            "note": "shared machine: compare runs only alongside their load averages",
            "runs": records, "imputation": impute})

    save()
    if not args.skip_builds:
        with tempfile.TemporaryDirectory(prefix="xreport-growth-") as tmp_name:
            build_runs(cases, tmp=Path(tmp_name), train_steps=args.train_steps,
                       build_args=build_args, records=records, save=save)


if __name__ == "__main__":
    main()
