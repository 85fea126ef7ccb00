"""CAM speed: xreport's batched Grad-CAM against pytorch_grad_cam, with 1 and 2 threads.

ResNet-18 (random weights: speed does not depend on them) at 224 px, 3 channels. Three
variants, each at 1 and at 2 torch threads:
- pytorch_grad_cam one image at a time,
- pytorch_grad_cam in batches of --batch-size (the same batch size as xreport),
- xreport ``compute_cams`` in batches of --batch-size.
The six runs are interleaved round by round, so a busy neighbour (the machine may be shared)
slows all of them alike; each ratio is taken within a round, between runs minutes apart at
most, and the median over rounds is the figure to quote (best and worst are kept too).
Writes bench/results/cam_speed.json with the CPU flags that decide the kernels.

    .venv/bin/python bench/cam_speed.py [--images 64] [--batch-size 64] [--threads 1,2] [--rounds 3]
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from pytorch_grad_cam import (EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM,
                              XGradCAM)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import common
from xreport.explain import compute_cams

RESULTS = common.RESULTS_DIR / "cam_speed.json"
# Every method pytorch_grad_cam also has ('cam', the classifier-weighted sum, it has not).
LIBRARY = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "xgradcam": XGradCAM,
           "layercam": LayerCAM, "eigencam": EigenCAM, "scorecam": ScoreCAM}
# CPU features that change which kernels torch uses (bf16/AMX matmuls, AVX-512 convolutions).


def grad_cam_per_image(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    with GradCAM(model, [model.layer4[-1]]) as cam:
        return np.concatenate([cam(x[i:i + 1], [ClassifierOutputTarget(int(targets[i]))])
                               for i in range(x.shape[0])])


def grad_cam_batched(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, *,
                     batch_size: int) -> np.ndarray:
    with GradCAM(model, [model.layer4[-1]]) as cam:
        return np.concatenate([
            cam(x[s:s + batch_size], [ClassifierOutputTarget(int(t)) for t in targets[s:s + batch_size]])
            for s in range(0, x.shape[0], batch_size)])


def xreport_batched(model: torch.nn.Module, x: torch.Tensor, targets: torch.Tensor, *,
                    batch_size: int) -> np.ndarray:
    return compute_cams(model, x, target_layer=model.layer4[-1], targets=targets,
                        batch_size=batch_size).numpy()


def every_method(model: torch.nn.Module, *, methods: list[str], images: int, size: int, score_images: int,
                 score_size: int, batch_size: int, threads: int, rounds: int) -> dict[str, object]:
    """Per method: pytorch_grad_cam one image at a time against xreport's batched call, rounds
    interleaved; ScoreCAM (C masked forward passes per image) on fewer, smaller images."""
    torch.set_num_threads(threads)
    out: dict[str, object] = {}
    for method in methods:
        n, s = (score_images, score_size) if method == "scorecam" else (images, size)
        x = torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(1))
        targets = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(2))
        maps: dict[str, np.ndarray] = {}

        def library(method: str = method, x: torch.Tensor = x, targets: torch.Tensor = targets) -> int:
            cam = LIBRARY[method](model, [model.layer4[-1]])
            if method == "scorecam":
                cam.batch_size = 16  # the library's own default, set explicitly
            try:
                maps["library"] = np.concatenate([cam(x[i:i + 1], [ClassifierOutputTarget(int(targets[i]))])
                                                  for i in range(x.shape[0])])
            finally:
                cam.activations_and_grads.release()
            return x.shape[0]

        def ours(method: str = method, x: torch.Tensor = x, targets: torch.Tensor = targets) -> int:
            maps["xreport"] = compute_cams(model, x, target_layer=model.layer4[-1], targets=targets,
                                           method=method, batch_size=batch_size).numpy()
            return x.shape[0]

        results = common.interleaved({f"{method}:library_per_image": library, f"{method}:xreport": ours},
                                     rounds=rounds)
        per_round = [a.rate / b.rate for a, b in zip(results[f"{method}:xreport"],
                                                     results[f"{method}:library_per_image"])]
        out[method] = {"images": n, "size": s, "variants": common.summarize(results),
                       "ratio_xreport_over_library_per_image": {
                           "median": round(float(np.median(per_round)), 2), "min": round(min(per_round), 2),
                           "max": round(max(per_round), 2), "per_round": [round(r, 2) for r in per_round]},
                       "max_abs_diff": float(np.abs(maps["library"] - maps["xreport"]).max())}
        print(f"{method:<10} xreport / library per image: {np.median(per_round):.2f}x  "
              f"max |diff| {out[method]['max_abs_diff']:.1e}", flush=True)
    return out




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--methods", default=",".join(LIBRARY),
                        help="methods compared per image with pytorch_grad_cam (empty: Grad-CAM table only)")
    parser.add_argument("--method-images", type=int, default=8)
    parser.add_argument("--score-images", type=int, default=2, help="images for ScoreCAM (C passes each)")
    parser.add_argument("--score-size", type=int, default=112)
    parser.add_argument("--smoke", action="store_true", help="2 images of 64 px, 1 round (tests)")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.batch_size, args.size, args.rounds = 2, 2, 64, 1
        args.method_images, args.score_images, args.score_size = 2, 1, 32
    threads = [int(t) for t in args.threads.split(",")]
    started = common.load_average()

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2).eval()
    x = torch.randn(args.images, 3, args.size, args.size)
    targets = torch.randint(0, 2, (args.images,))
    n, bs = args.images, args.batch_size
    xreport_batched(model, x[:8], targets[:8], batch_size=8)  # warm-up (oneDNN kernels, allocator)

    outputs: dict[str, np.ndarray] = {}

    def run(name: str, t: int, fn: Callable[[], np.ndarray]) -> Callable[[], int]:
        def go() -> int:
            torch.set_num_threads(t)
            outputs[name] = fn()
            return n
        return go

    variants: dict[str, Callable[[], int]] = {}
    for t in threads:
        variants[f"grad_cam_per_image@{t}"] = run("per_image", t, lambda: grad_cam_per_image(model, x, targets))
        variants[f"grad_cam_batched_{bs}@{t}"] = run(
            "pgc_batched", t, lambda: grad_cam_batched(model, x, targets, batch_size=bs))
        variants[f"xreport_batched_{bs}@{t}"] = run(
            "xreport", t, lambda: xreport_batched(model, x, targets, batch_size=bs))
    results = common.interleaved(variants, rounds=args.rounds)

    ratios: dict[str, dict[str, object]] = {}
    for t in threads:
        ours = results[f"xreport_batched_{bs}@{t}"]
        for other in (f"grad_cam_per_image@{t}", f"grad_cam_batched_{bs}@{t}"):
            # Within a round the two runs are adjacent in time: their ratio cancels slow phases.
            per_round = [a.rate / b.rate for a, b in zip(ours, results[other])]
            ratios[f"xreport_batched_{bs}@{t} / {other}"] = {
                "median": round(float(np.median(per_round)), 2), "min": round(min(per_round), 2),
                "max": round(max(per_round), 2), "per_round": [round(r, 2) for r in per_round]}
    max_diff = float(np.abs(outputs["per_image"] - outputs["xreport"]).max())
    methods = [m for m in args.methods.split(",") if m]
    per_method = every_method(model, methods=methods, images=args.method_images, size=args.size,
                              score_images=args.score_images, score_size=args.score_size,
                              batch_size=max(args.batch_size, 64), threads=max(threads),
                              rounds=args.rounds) if methods else {}

    print(f"\n{'ratio (median of rounds, min-max)':<72}")
    for key, r in ratios.items():
        print(f"{key:<64}{r['median']:>7.2f}  ({r['min']:.2f}-{r['max']:.2f})")
    print(f"max |xreport - pytorch_grad_cam| = {max_diff:.2e}")
    common.write_result(args.out, benchmark="cam_speed", started_load=started, body={
        "cpu": common.cpu_flags(), "model": "resnet18 (random weights)", "input": [n, 3, args.size, args.size],
        "smoke": args.smoke, "method": "gradcam", "batch_size": bs, "threads": threads, "rounds": args.rounds,
        "note": "interleaved rounds on a machine shared with other work; quote the median ratio",
        "variants": common.summarize(results), "ratios": ratios, "max_abs_diff_vs_grad_cam": max_diff,
        "methods": per_method})


if __name__ == "__main__":
    main()
