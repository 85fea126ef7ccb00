"""Evaluation throughput: xreport's batched `predict` against plain `model(x)` DataLoader loops.

On the PneumoniaMNIST test split (624 images, 28 px), ResNet-18 with random weights (speed does
not depend on them), standard and 3x3 small-input stem, batch 256, in eval mode without grad:
  loader_pil     a PIL Dataset with ToTensor + Normalize and a DataLoader (num_workers=0)
  loader_tensor  a TensorDataset of normalised float tensors and a DataLoader
  xreport        `xreport.evaluate.predict` on the uint8 split (what `xreport evaluate` runs)
The variants are interleaved for --rounds rounds; the best round of each is reported.
With a trained checkpoint it also times the whole `xreport evaluate --no-cam` in-process
(load, predict test and val, metrics with 1000 bootstrap resamples).

    .venv/bin/python bench/eval_speed.py [--rounds 5] [--threads 1] [--smoke]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

import common
from xreport import config as config_mod
from xreport import runs
from xreport.data import load_dataset
from xreport.evaluate import evaluate_run, predict
from xreport.models import build_model

RESULTS = common.RESULTS_DIR / "eval_speed.json"
IMAGE_SIZE = 28
STEMS = {"standard": False, "small": True}


class PILDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, transform: Callable[[Image.Image], torch.Tensor]):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(Image.fromarray(self.images[i], mode="L"))


@torch.no_grad()
def plain_loop(model: torch.nn.Module, loader: torch.utils.data.DataLoader) -> int:
    model.eval()
    out = [model(x).softmax(1) for x in loader]
    return int(torch.cat(out).shape[0])


def variants_for(images: torch.Tensor, *, small_stem: bool, batch_size: int) -> dict[str, Callable[[], int]]:
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=2, in_channels=1, small_input_stem=small_stem).eval()
    mean, std = float(images.float().mean() / 255), float(images.float().std() / 255)
    pil = PILDataset(images[:, 0].numpy(), transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((mean,), (std,))]))
    tensors = torch.utils.data.TensorDataset((images.float() / 255 - mean) / std)
    cpu = torch.device("cpu")

    def tensor_loop() -> int:
        loader = torch.utils.data.DataLoader(tensors, batch_size=batch_size)
        with torch.no_grad():
            return int(torch.cat([model(x).softmax(1) for (x,) in loader]).shape[0])

    return {
        "loader_pil": lambda: plain_loop(model, torch.utils.data.DataLoader(pil, batch_size=batch_size)),
        "loader_tensor": tensor_loop,
        "xreport": lambda: len(predict(model, images, mean=[mean], std=[std], device=cpu,
                                       batch_size=batch_size, progress=False)),
    }


def evaluate_whole(data: Path, tmp: Path, *, rounds: int, max_steps: int) -> dict[str, Any]:
    """`xreport evaluate --no-cam` end to end, in-process, on a small trained checkpoint."""
    common.train_tiny_run(data, name="evalbench", checkpoints=tmp / "ck", max_steps=max_steps)
    paths = runs.RunPaths("evalbench", checkpoints_root=tmp / "ck", reports_root=tmp / "rep")
    ms, timings = [], []
    for _ in range(rounds):
        out: dict[str, Any] = {}

        def run() -> int:
            out.update(evaluate_run(paths, device="cpu", explain=False, progress=False))
            return int(out["data"]["n"])
        ms.append(common.measure(run))
        timings.append(out["timings"])
    return {"command": "evaluate_run(paths, device='cpu', explain=False)  # = xreport evaluate --no-cam",
            "best_images_per_s": round(common.best_rate(ms), 2),
            "rounds": [m.as_dict() | {"timings": t} for m, t in zip(ms, timings)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a MedMNIST .npz (default: pneumoniamnist.npz)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a loaded shared machine 2 OpenMP threads spin-wait)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="a quick check on random images (standard stem, one round)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = common.load_average()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = args.data or common.find_pneumoniamnist()
        if args.smoke:
            data = common.synthetic_npz(tmp / "smoke.npz", n_train=32, n_val=16, n_test=24)
            args.rounds, args.batch_size = 1, 8
        elif data is None:
            sys.exit("pneumoniamnist.npz not found: set $XREPORT_DATA_DIR or pass --data")
        stems = {"standard": False} if args.smoke else STEMS
        images = load_dataset(config_mod.DataConfig(dataset=str(data)), config_mod.PreprocessConfig(),
                              image_size=IMAGE_SIZE, splits=("test",)).splits["test"].images
        variants = {f"{stem}/{k}": fn for stem, small in stems.items()
                    for k, fn in variants_for(images, small_stem=small, batch_size=args.batch_size).items()}
        for fn in variants.values():   # warm-up: oneDNN kernels, allocator
            fn()
        results = common.interleaved(variants, rounds=args.rounds)
        whole = evaluate_whole(data, tmp, rounds=1 if args.smoke else 2, max_steps=1 if args.smoke else 10)
    ratios = {stem: {"xreport_vs_loader_pil": common.ratio(results, f"{stem}/xreport", f"{stem}/loader_pil"),
                     "xreport_vs_loader_tensor": common.ratio(results, f"{stem}/xreport", f"{stem}/loader_tensor")}
              for stem in stems}
    body = {"setup": {"data": str(data), "images": len(images), "image_size": IMAGE_SIZE,
                      "batch_size": args.batch_size, "rounds": args.rounds,
                      "model": "resnet18 (random weights, 1 channel, 2 classes), eval, no grad, fp32"},
            "images_per_s": common.summarize(results), "ratios": ratios,
            "xreport_evaluate_no_cam": whole, "smoke": args.smoke}
    common.write_result(args.out, benchmark="eval_speed", started_load=started, body=body)
    print(ratios)


if __name__ == "__main__":
    main()
