"""Batched inference of a run's checkpoint on a split -> predictions.csv and metrics.json.

Everything needed (classes, preprocessing, input size, data source) comes from the checkpoint;
``data`` may point the same run at another copy or split of the data (external validation).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, TypedDict, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from . import artifacts
from . import config as config_mod
from . import metrics as metrics_mod
from . import runs
from .data import load_dataset, normalize_batch
from .data.base import Dataset, Split, grey_to_rgb
from .device import autocast, resolve_channels_last, resolve_device, resolve_precision
from .errors import CheckpointError, ConfigError, DataError
from .models import cam_target_layer, load_weights, model_from_meta

if TYPE_CHECKING:
    from .explain import ExplainSummary

logger = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A checkpoint rebuilt into a model, with its config and metadata."""

    checkpoint: runs.Checkpoint
    model: torch.nn.Module
    config: config_mod.RunConfig
    meta: artifacts.CheckpointMeta
    sha256: str


def load_run(paths: runs.RunPaths, *, device: torch.device, checkpoint: Path | None = None) -> LoadedRun:
    path = checkpoint or artifacts.checkpoint_path(paths)
    ckpt = runs.load_checkpoint(path)
    meta = artifacts.check_checkpoint_meta(ckpt.meta, path=path)
    run_config = config_mod.from_dict(meta["config"], source=f"{path} (meta.config)")
    model = model_from_meta(meta, path=path)
    _check_checkpoint_size(model, path)
    load_weights(model, ckpt.state_dict, path=path)
    runs.check_finite(ckpt.state_dict, path=path)
    model.to(device).eval()
    return LoadedRun(checkpoint=ckpt, model=model, config=run_config, meta=meta,
                     sha256=runs.sha256_file(path))


def _check_checkpoint_size(model: torch.nn.Module, path: Path) -> None:
    """A checkpoint holds the weights, and for last.pt the optimiser state (up to 2 more
    copies) and RNG states: anything far larger is not this architecture's checkpoint."""
    from .limits import human

    needed = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    allowed = 4 * needed + 16 * 2**20
    held = runs.checkpoint_storage_bytes(path)
    if held > allowed:
        raise CheckpointError(f"{path}: holds {human(held)} of tensors but its architecture needs "
                              f"{human(needed)}; refused (not this architecture's checkpoint)")


def dataset_for_run(run: LoadedRun, *, splits: Sequence[str], data: str | None = None) -> Dataset:
    """Load the run's data (or ``data`` instead) with the run's own preprocessing."""
    data_cfg = run.config.data
    resolved = run.meta.get("data", {}).get("dataset")
    if data is not None:
        data_cfg = replace(data_cfg, dataset=str(data), kind="auto")
    elif resolved:
        data_cfg = replace(data_cfg, dataset=str(resolved))
    # The checkpoint's class names win: an unlabelled test CSV has none of its own.
    data_cfg = replace(data_cfg, class_names=tuple(run.meta["class_names"]))
    dataset = load_dataset(data_cfg, run.config.preprocess, image_size=int(run.meta["image_size"]),
                           splits=tuple(splits))
    return _match_channels(dataset, int(run.meta["in_channels"]))


def _match_channels(dataset: Dataset, channels: int) -> Dataset:
    """An all-grey data set for an RGB-trained model gets its channel repeated."""
    if dataset.channels == 1 and channels == 3:
        return replace(dataset, splits={name: grey_to_rgb(s) for name, s in dataset.splits.items()})
    return dataset


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, *, mean: Sequence[float],
            std: Sequence[float], device: torch.device, batch_size: int = 256,
            tta: bool = False, progress: bool = True) -> np.ndarray:
    """Class probabilities (N, K) for uint8 images (N, C, H, W), in batches."""
    model.eval()
    out = []
    pin = device.type == "cuda"
    # The same choice as training: bf16 autocast + NHWC where the hardware has bf16 units.
    precision = resolve_precision("auto", device)
    channels_last = resolve_channels_last("auto", device, precision)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch",
                      disable=not progress, leave=False):
        batch = images[start:start + batch_size]
        if pin:
            batch = batch.pin_memory()
        x = normalize_batch(batch.to(device, non_blocking=pin), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x).float()
            probs = logits.softmax(dim=1)
            if tta:  # horizontal flip, averaged in probability space
                probs = (probs + model(x.flip(-1)).float().softmax(dim=1)) / 2
        out.append(probs.cpu())
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    if not out:
        return np.zeros((0, 0), dtype=np.float64)
    return torch.cat(out).double().numpy()


def check_outputs(probs: np.ndarray, ids: Sequence[str], *, path: Path) -> None:
    """NaN outputs: name the checkpoint and the first image instead of writing NaN rows."""
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1)) if probs.size else np.zeros(0, dtype=np.intp)
    if len(bad):
        raise CheckpointError(f"{path}: the model outputs NaN or infinite values for {len(bad)} "
                              f"image(s), first {ids[int(bad[0])]!r}; the checkpoint is not usable")


def _timed(timings: dict[str, float], key: str):
    @contextlib.contextmanager
    def cm():
        start = time.perf_counter()
        yield
        timings[key] = round(time.perf_counter() - start, 3)
    return cm()


def evaluate_run(paths: runs.RunPaths, *, split: str = "test", device: str = "auto",
                 data: str | None = None, tta: bool = False, cam_method: str = "gradcam",
                 explain: bool = True, n_boot: int = 1000, seed: int = 0,
                 batch_size: int = 256, dataset: Dataset | None = None,
                 run: LoadedRun | None = None, out: runs.EvaluationPaths | None = None,
                 progress: bool = True) -> artifacts.Evaluation:
    """Run the checkpoint on ``split``; write predictions.csv, metrics.json, cams/ and viewer.json
    into ``out``: by default the run's own evaluation of that split, or for other ``data``
    ``reports/NAME/external-<data name>/`` (never the run's own files)."""
    timings: dict[str, float] = {}
    if out is None:
        out = paths.external(data) if data is not None else paths.evaluation(split)
    dev = resolve_device(device)
    with _timed(timings, "load"):
        run = run or load_run(paths, device=dev)
        # val is read for the operating points; external data may have only the one split.
        wanted = [split] + (["val"] if split != "val" and data is None else [])
        if dataset is None:
            dataset = dataset_for_run(run, splits=wanted, data=data)
    if split not in dataset.splits:
        raise DataError(f"{dataset.source}: has no {split!r} split; available: {', '.join(dataset.splits)}")
    target = dataset.splits[split]
    if len(target) == 0:
        raise DataError(f"{dataset.source}: the {split!r} split is empty")
    _check_compatible(run, dataset)
    mean, std = run.meta["mean"], run.meta["std"]
    class_names = list(run.meta["class_names"])
    task = run.meta["task"]   # an older meta's default is set on load (artifacts)

    with _timed(timings, "predict"):
        probs = predict(run.model, target.images, mean=mean, std=std, device=dev,
                        batch_size=batch_size, tta=tta, progress=progress)
    check_outputs(probs, target.ids, path=run.checkpoint.path)
    artifacts.save_predictions(out, target.ids, target.labels.numpy() if target.labels is not None else None,
                               probs, class_names=class_names)

    metrics = None
    if target.labels is not None:
        val = None
        val_split = dataset.splits.get("val") if split != "val" else None
        if val_split is not None and val_split.labels is not None and len(val_split):
            with _timed(timings, "predict_val"):
                val = (val_split.labels.numpy(), predict(run.model, val_split.images, mean=mean, std=std,
                                                         device=dev, batch_size=batch_size, tta=tta,
                                                         progress=progress))
        with _timed(timings, "metrics"):
            metrics = metrics_mod.compute_all(target.labels.numpy(), probs, class_names=class_names,
                                              task=task, val=val, n_boot=n_boot, seed=seed)

    explanation = None
    if explain and target.labels is not None:
        with _timed(timings, "explain"):
            explanation = explain_and_draw(run, target, probs, out=out, method=cam_method,
                                           seed=seed, device=dev, task=task, split_name=split)

    result: artifacts.Evaluation = {
        "schema": artifacts.EVALUATION_SCHEMA,
        "run": paths.name,
        "split": split,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(dev),
        "tta": bool(tta),
        "checkpoint": {"path": str(run.checkpoint.path), "sha256": run.sha256,
                       "epoch": run.meta.get("epoch")},
        "data": {"source": dataset.source, "fingerprint": dataset.fingerprint, "n": len(target),
                 "external": data is not None},
        "class_names": class_names,
        "task": task,
        # What the model said, with or without labels: an unlabelled test split's only summary.
        "predicted_counts": np.bincount(probs.argmax(axis=1), minlength=len(class_names)).tolist(),
        "metrics": metrics,
        # As written; artifacts.load_evaluation reads it back as an artifacts.Explanation.
        "explain": cast("artifacts.Explanation | None", explanation),
        "timings": timings,
        "skipped": [{"file": s["file"], "reason": s["reason"]} for s in dataset.skipped],
    }
    artifacts.save_evaluation(out, result)
    logger.debug("wrote %s and %s", out.predictions, out.metrics)
    return result


def evaluate_report(paths: runs.RunPaths, *, split: str = "test", device: str = "auto",
                    data: str | None = None, tta: bool = False, cam_method: str = "gradcam",
                    explain: bool = True, out: Path | None = None,
                    progress: bool = True) -> tuple[artifacts.Evaluation, runs.EvaluationPaths]:
    """``xreport evaluate``: options checked first, then under the folder's lock (the same as
    ``build``) the predictions, metrics and CAMs are written to a staging copy and swapped in
    whole. They go to ``out`` when given, else to the run's own evaluation of ``split`` or,
    for other ``data``, to ``reports/NAME/external-<data name>/``: never over the run's own
    files. Returns the evaluation and where its files now are."""
    from .build import check_report_options

    check_report_options(split=split, cam_method=cam_method if explain else None, device=device)
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder")
        with runs.run_lock(out, what="evaluation"), runs.staged_folder(out) as staged:
            result = evaluate_run(paths, split=split, device=device, data=data, tta=tta, cam_method=cam_method,
                                  explain=explain, out=runs.EvaluationPaths(staged, paths.name),
                                  progress=progress)
        return result, runs.EvaluationPaths(out, paths.name)
    final = paths.external(data) if data is not None else paths.evaluation(split)
    with runs.run_lock(paths.report_dir, what="report"), runs.staged_report(paths) as staged:
        where = staged.external(data) if data is not None else staged.evaluation(split)
        result = evaluate_run(staged, split=split, device=device, data=data, tta=tta,
                              cam_method=cam_method, explain=explain, out=where, progress=progress)
    return result, final


def _check_compatible(run: LoadedRun, dataset: Dataset) -> None:
    meta_classes = len(run.meta["class_names"])
    if dataset.num_classes != meta_classes:
        raise DataError(f"{dataset.source}: has {dataset.num_classes} classes but the checkpoint "
                        f"was trained on {meta_classes} ({', '.join(run.meta['class_names'])})")
    if dataset.channels != int(run.meta["in_channels"]):
        raise DataError(f"{dataset.source}: images have {dataset.channels} channels but the "
                        f"checkpoint expects {run.meta['in_channels']}")


class NormalizedView:
    """Normalised float images on demand: explain only indexes the gallery and its samples,
    so the whole split never exists as float (10,000 RGB 224 px images would be 6 GB)."""

    def __init__(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> None:
        self.images, self.mean, self.std = images, mean, std
        self.shape = images.shape

    def __getitem__(self, index: int | slice | torch.Tensor) -> torch.Tensor:
        return normalize_batch(self.images[index], self.mean, self.std)


class ExplainBudget(TypedDict):
    faithfulness_n: int
    sanity_n: int
    faithfulness_steps: int
    random_per_image: int
    sanity_seeds: int
    batch_size: int


# Images, curve steps, random maps per image and cascade seeds of the explanation checks.
EXPLAIN_BUDGET: dict[str, ExplainBudget] = {
    "cpu": {"faithfulness_n": 64, "sanity_n": 16, "faithfulness_steps": 4, "random_per_image": 2,
            "sanity_seeds": 3, "batch_size": 128},
    "cuda": {"faithfulness_n": 64, "sanity_n": 16, "faithfulness_steps": 10, "random_per_image": 4,
             "sanity_seeds": 5, "batch_size": 256},
}


def explain_and_draw(run: LoadedRun, split: Split, probs: np.ndarray, *, out: runs.EvaluationPaths,
                     method: str, seed: int, device: torch.device, task: artifacts.Task = "binary",
                     split_name: str = "test") -> ExplainSummary:
    """CAM gallery, faithfulness, sanity check (and localisation on phantom data), and the
    interactive viewer's data; the figures stage draws the gallery's overlays while the
    maps are in memory."""
    from . import explain
    from .figures import draw_cam_gallery

    layer, layer_name = cam_target_layer(run.model, input_size=int(run.meta["image_size"]),
                                         in_channels=int(run.meta["in_channels"]))
    x = NormalizedView(split.images, run.meta["mean"], run.meta["std"])
    # Faithfulness costs 4 * (steps - 1) * (1 + random maps) forward passes per image: the
    # same 64 images and 16 sanity images everywhere, fewer steps and random maps on CPU
    # (4 steps, i.e. 25/50/75% removed, keep the 624-image cold build within 30 s on 2 cores;
    # the verdicts' power comes from the 64 paired images, not the curve's resolution).
    budget = EXPLAIN_BUDGET["cuda" if device.type == "cuda" else "cpu"]
    summary, gallery_cams = explain.explain_split(
        run.model, x, y_true=split.known_labels().numpy(), probs=probs,
        class_names=list(run.meta["class_names"]), target_layer=layer, layer_name=layer_name,
        method=method, masks=split.masks, seed=seed, device=device, **budget)
    draw_cam_gallery(summary["gallery"], gallery_cams, split.images, split.ids, out=out)
    summary["viewer"] = write_viewer_data(run, split, probs, layer=layer, layer_name=layer_name,
                                          gallery_rows=[e["index"] for e in summary["gallery"]],
                                          out=out, method=method, task=task, split_name=split_name,
                                          device=device)
    return summary


def write_viewer_data(run: LoadedRun, split: Split, probs: np.ndarray, *, layer: torch.nn.Module,
                      layer_name: str, gallery_rows: Sequence[int], out: runs.EvaluationPaths,
                      method: str, task: artifacts.Task, split_name: str, device: torch.device) -> artifacts.ViewerRef:
    """viewer.json: the gallery's images and the most and least confident ones, with a map for
    every class (one batched pass). Returns the reference that metrics.json keeps."""
    from . import explain, viewer

    sets = viewer.select_rows(probs, gallery_rows)
    rows = sorted(sets)
    x = NormalizedView(split.images, run.meta["mean"], run.meta["std"])
    index = torch.tensor(rows, dtype=torch.long)
    maps = explain.viewer_maps(run.model, x[index], target_layer=layer, method=method, device=device)
    data = viewer.build_viewer(split.images, split.ids, split.known_labels().numpy(), probs, maps, rows, sets,
                               class_names=list(run.meta["class_names"]), task=task, split=split_name,
                               method=method, layer=layer_name)
    artifacts.save_viewer(out, data)
    return {"file": out.viewer.name, "n": len(rows)}
