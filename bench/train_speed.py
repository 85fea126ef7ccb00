"""Training throughput: xreport's training step against hand-written loops, side by side.

On PneumoniaMNIST train images at 28 px, batch 128, ResNet-18 (xreport's build_model for every
variant, so only the input pipeline and precision differ), standard and 3x3 small-input stem:
  pil_w0 / pil_w2  a PIL Dataset + torchvision transforms (RandomRotation, RandomAffine, ToTensor,
                   Normalize) + DataLoader(num_workers=0 / 2), fp32: the lab reports' loop
  memory_fp32      a plain loop over in-memory normalised tensors, no augmentation, fp32
  memory_bf16cl    the same with bf16 autocast + channels-last
  xreport_fp32     xreport's own epoch loop (uint8 in memory, batched tensor augmentation), fp32
  xreport_auto     the same with `train.precision = "auto"` / `channels_last = "auto"`
Each measurement builds a fresh model, takes --warmup untimed steps, then times --steps steps.
The variants are interleaved for --rounds rounds; the best round of each is reported.

    .venv/bin/python bench/train_speed.py [--steps 8] [--rounds 2] [--threads 1] [--smoke]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms

import common
from xreport import config as config_mod
from xreport import train as train_mod
from xreport.data import load_dataset
from xreport.data.base import Dataset
from xreport.models import build_model

RESULTS = common.RESULTS_DIR / "train_speed.json"
IMAGE_SIZE = 28
STEMS = {"standard": False, "small": True}


class PILDataset(torch.utils.data.Dataset):
    """The hand-written Dataset of the lab reports: one PIL image at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Image.Image], torch.Tensor]):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def pil_transform(mean: float, std: float) -> transforms.Compose:
    return transforms.Compose([
        transforms.RandomRotation(10),
        transforms.RandomAffine(degrees=0, translate=(0.05, 0.05), scale=(0.9, 1.1)),
        transforms.ToTensor(),
        transforms.Normalize((mean,), (std,)),
    ])


class HandLoop:
    """A hand-written training loop over any iterator of (x, y) batches."""

    def __init__(self, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]], *,
                 small_stem: bool, bf16_channels_last: bool, warmup: int):
        self.make_batches, self.bf16 = batches, bf16_channels_last
        torch.manual_seed(0)
        self.model = build_model("resnet18", num_classes=2, in_channels=1, small_input_stem=small_stem)
        if self.bf16:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=1e-4)
        self.criterion = nn.CrossEntropyLoss()
        self.batches = self.make_batches()
        self.run(warmup)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.bf16:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = self.criterion(self.model(x).float(), y)
        else:
            loss = self.criterion(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def run(self, steps: int) -> int:
        seen = 0
        for _ in range(steps):
            x, y = next(self.batches)
            self.step(x, y)
            seen += len(y)
        return seen


def memory_batches(x: torch.Tensor, y: torch.Tensor, *, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    while True:
        order = torch.randperm(len(x), generator=g)
        for s in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[s:s + batch_size]
            yield x[idx], y[idx]


def loader_batches(ds: PILDataset, *, batch_size: int, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, generator=torch.Generator().manual_seed(0))
    while True:
        yield from loader


class XReportLoop:
    """xreport's own epoch loop (`train._train_epoch`), cut to a number of steps."""

    def __init__(self, config: config_mod.RunConfig, ds: Dataset, *, warmup: int):
        self.config, self.ds = config, ds
        setup = train_mod._make_setup(config)
        self.resolved = {"precision": setup.precision, "channels_last": setup.channels_last}
        self.loop = train_mod._build_loop(config, ds, setup, small_stem=config.model.small_input_stem == "on")
        self.run(warmup)

    def run(self, steps: int) -> int:
        # max_steps minus the steps already "taken" is how many batches the epoch runs.
        self.loop.config = replace(self.config, train=replace(self.config.train, max_steps=steps))
        state = train_mod._State()
        train_mod._train_epoch(self.loop, state, epoch=1)
        return steps * self.config.train.batch_size


def xreport_config(data: Path, *, small_stem: bool, precision: str, batch_size: int) -> config_mod.RunConfig:
    raw = {"name": "bench", "image_size": IMAGE_SIZE, "data": {"dataset": str(data)},
           "model": {"small_input_stem": "on" if small_stem else "off"},
           "train": {"batch_size": batch_size, "device": "cpu", "precision": precision,
                     "channels_last": "off" if precision == "fp32" else "auto"}}
    return config_mod.from_dict(raw, source="bench")


def variants_for(ds: Dataset, data: Path, *, small_stem: bool, batch_size: int, warmup: int,
                 workers: tuple[int, ...]) -> dict[str, Callable[[], int]]:
    split = ds.splits["train"]
    images_np = split.images[:, 0].numpy()
    labels_np = split.labels.numpy()
    mean = float(split.images.float().mean() / 255)
    std = float(split.images.float().std() / 255)
    x_mem = (split.images.float() / 255 - mean) / std
    pil = PILDataset(images_np, labels_np, pil_transform(mean, std))
    out: dict[str, Callable[[], int]] = {}
    for w in workers:
        out[f"pil_w{w}"] = lambda w=w: HandLoop(lambda: loader_batches(pil, batch_size=batch_size, workers=w),
                                                small_stem=small_stem, bf16_channels_last=False,
                                                warmup=warmup)
    for name, bf16 in (("memory_fp32", False), ("memory_bf16cl", True)):
        out[name] = lambda bf16=bf16: HandLoop(lambda: memory_batches(x_mem, split.labels, batch_size=batch_size),
                                               small_stem=small_stem, bf16_channels_last=bf16, warmup=warmup)
    for precision in ("fp32", "auto"):
        cfg = xreport_config(data, small_stem=small_stem, precision=precision, batch_size=batch_size)
        out[f"xreport_{precision}"] = lambda cfg=cfg: XReportLoop(cfg, ds, warmup=warmup)
    return out


def run_benchmark(data: Path, *, steps: int, warmup: int, rounds: int, batch_size: int,
                  workers: tuple[int, ...], stems: tuple[str, ...]) -> dict[str, Any]:
    ds = load_dataset(config_mod.DataConfig(dataset=str(data)), config_mod.PreprocessConfig(),
                      image_size=IMAGE_SIZE, splits=("train", "val"))
    builders: dict[str, Callable[[], Any]] = {}
    for stem in stems:
        for key, build in variants_for(ds, data, small_stem=STEMS[stem], batch_size=batch_size,
                                       warmup=warmup, workers=workers).items():
            builders[f"{stem}/{key}"] = build
    resolved: dict[str, Any] = {}
    results: dict[str, list[common.Measurement]] = {k: [] for k in builders}
    for r in range(rounds):
        for key, build in builders.items():
            loop = build()   # a fresh model, warmed up: outside the timed call
            if isinstance(loop, XReportLoop):
                resolved[key] = loop.resolved
            m = common.measure(lambda: loop.run(steps))
            del loop         # ends the DataLoader's workers before the next variant
            results[key].append(m)
            print(f"round {r + 1}/{rounds}  {key:<28} {m.rate:8.1f} img/s  ({m.seconds:.1f} s, "
                  f"load {m.load_before[0]:.2f}->{m.load_after[0]:.2f})", flush=True)
    ratios: dict[str, Any] = {}
    for stem in stems:
        pil_best = max(common.best_rate(results[f"{stem}/pil_w{w}"]) for w in workers)
        xr = common.best_rate(results[f"{stem}/xreport_auto"])
        ratios[stem] = {
            "xreport_auto_vs_best_pil": round(xr / pil_best, 2),
            "xreport_auto_vs_memory_fp32": common.ratio(results, f"{stem}/xreport_auto", f"{stem}/memory_fp32"),
            "xreport_auto_vs_memory_bf16cl": common.ratio(results, f"{stem}/xreport_auto", f"{stem}/memory_bf16cl"),
            "xreport_fp32_vs_memory_fp32": common.ratio(results, f"{stem}/xreport_fp32", f"{stem}/memory_fp32"),
            "xreport_fp32_vs_best_pil": round(common.best_rate(results[f"{stem}/xreport_fp32"]) / pil_best, 2),
            "targets": {"xreport_auto >= 2x best PIL loop": xr >= 2 * pil_best,
                        "xreport_auto >= memory_fp32": xr >= common.best_rate(results[f"{stem}/memory_fp32"])},
        }
    return {"setup": {"data": str(data), "images": len(ds.splits["train"]), "image_size": IMAGE_SIZE,
                      "batch_size": batch_size, "steps": steps, "warmup_steps": warmup,
                      "rounds": rounds, "model": "resnet18 (xreport build_model, 1 channel, 2 classes)",
                      "optimizer": "AdamW lr 1e-3", "xreport_resolved": resolved},
            "images_per_s": common.summarize(results), "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a MedMNIST .npz (default: pneumoniamnist.npz)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--stems", default="standard,small")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a loaded shared machine 2 OpenMP threads spin-wait)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true",
                        help="a quick check on random images (standard stem, 1 step of 8, one round)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = common.load_average()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or common.find_pneumoniamnist()
        if args.smoke:
            data = common.synthetic_npz(Path(tmp) / "smoke.npz", n_train=48, n_val=8, n_test=8)
            args.steps, args.warmup, args.rounds, args.batch_size = 1, 1, 1, 8
            args.stems = "standard"
        elif data is None:
            sys.exit("pneumoniamnist.npz not found: set $XREPORT_DATA_DIR or pass --data")
        body = run_benchmark(data, steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                             batch_size=args.batch_size, workers=(0, 2),
                             stems=tuple(s.strip() for s in args.stems.split(",")))
    body["smoke"] = args.smoke
    common.write_result(args.out, benchmark="train_speed", started_load=started, body=body)
    for stem, r in body["ratios"].items():
        print(stem, {k: v for k, v in r.items()})


if __name__ == "__main__":
    main()
