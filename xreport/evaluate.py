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
from typing import TYPE_CHECKING, Mapping, Sequence, TypedDict, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from . import artifacts
from . import config as config_mod
from . import metrics as metrics_mod
from . import runs
from .data import load_dataset, normalize_batch
from .data.augment import apply_views, tta_views
from .data.base import SPLITS as DATA_SPLITS
from .data.base import Dataset, Split, grey_to_rgb, match_classes, remap_labels
from .device import EVAL_PRECISION, autocast, check_eval_precision, resolve_channels_last, resolve_device
from .errors import CheckpointError, ConfigError, DataError, ReportError, XReportError
from .explain import DEFAULT_CAM_METHOD, cam_methods
from .limits import REPORT_CLASSES
from .models import cam_target_layer, load_weights, model_from_meta

if TYPE_CHECKING:
    from .explain import ExplainSummary, GalleryPick

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


def dataset_for_run(run: LoadedRun, *, splits: Sequence[str], data: str | None = None,
                    class_map: Mapping[str, str] | None = None) -> Dataset:
    """Load the run's data (or ``data`` instead) with the run's own preprocessing, its classes
    matched to the checkpoint's by name (``data.match_classes``): the same names in another
    order are re-ordered, other names need ``class_map`` (else the run's ``data.class_map``)."""
    data_cfg = run.config.data
    resolved = run.meta.get("data", {}).get("dataset")
    if data is not None:
        # Other data is read with its own names: the run's data.class_names renamed the
        # training source's classes by position, which says nothing about this source.
        data_cfg = replace(data_cfg, dataset=str(data), kind="auto", class_names=(), class_names_i18n={})
    elif resolved:
        data_cfg = replace(data_cfg, dataset=str(resolved))
    dataset = load_dataset(data_cfg, run.config.preprocess, image_size=int(run.meta["image_size"]),
                           splits=tuple(splits))
    dataset = match_to_checkpoint(dataset, run.meta, path=run.checkpoint.path,
                                  class_map=run.config.data.class_map if class_map is None else class_map,
                                  strict_map=class_map is not None)
    return _match_channels(dataset, int(run.meta["in_channels"]))


def match_to_checkpoint(dataset: Dataset, meta: artifacts.CheckpointMeta, *, path: Path,
                        class_map: Mapping[str, str], strict_map: bool = True) -> Dataset:
    """``dataset`` with its labels in the checkpoint's class order and the checkpoint's names."""
    names = list(meta["class_names"])
    found = dataset.class_names or names     # an unlabelled source names no classes
    order = match_classes(found, names, class_map=class_map, strict_map=strict_map,
                          where=dataset.source, found_what="the data", reference_what=f"checkpoint {path.name}")
    if order != list(range(len(names))):
        logger.warning("%s: classes matched to the checkpoint by name (%s)", dataset.source,
                       ", ".join(f"{found[i]} -> {names[j]} ({j})" for i, j in enumerate(order)))
    return replace(dataset, class_names=names, splits={k: remap_labels(s, order) for k, s in dataset.splits.items()},
                   class_names_i18n={lang: list(n) for lang, n in meta["class_names_i18n"].items()})


def _match_channels(dataset: Dataset, channels: int) -> Dataset:
    """An all-grey data set for an RGB-trained model gets its channel repeated."""
    if dataset.channels == 1 and channels == 3:
        return replace(dataset, splits={name: grey_to_rgb(s) for name, s in dataset.splits.items()})
    return dataset


# Test-time augmentation (``--tta``): off by default; measured on the zoo's colour sets
# (bench/ensemble.py, BENCHMARKS.md session 8) it helped wbc and hurt RetinaMNIST's accuracy.
TTA_CHOICES = ("off", "on")
TTA_DEFAULT = "off"
NO_TTA: tuple[artifacts.TtaView, ...] = ("identity",)


def _check_tta(tta: str) -> None:
    if tta not in TTA_CHOICES:
        raise ConfigError(f"--tta {tta!r} is not one of {', '.join(TTA_CHOICES)}")


def views_for(run: LoadedRun, tta: str, *, image_shape: Sequence[int]) -> tuple[artifacts.TtaView, ...]:
    """The views ``tta`` averages for ``run``: with "on", those its own training augmentation
    declared valid (``data.augment.tta_views``, read from the checkpoint's config), so a model
    never sees at test time a view it was not trained on; the identity alone with "off", and
    for imported weights (``xreport import``: trained elsewhere, with augmentations unknown)."""
    _check_tta(tta)
    if tta == "off" or run.meta.get("imported"):
        return NO_TTA
    return tta_views(run.config.augment, square=image_shape[-1] == image_shape[-2])


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, *, mean: Sequence[float],
            std: Sequence[float], device: torch.device, batch_size: int = 256,
            views: Sequence[artifacts.TtaView] = NO_TTA, progress: bool = True,
            precision: str = EVAL_PRECISION) -> np.ndarray:
    """Class probabilities (N, K) for uint8 images (N, C, H, W), in batches, in ``precision``
    (fp32 unless bf16 is asked for: see device.EVAL_PRECISION).

    With several ``views`` (test-time augmentation) each image's probabilities are the mean
    over its views (softmax first: an ordinal head's output is its log-probabilities, so this
    averages its class probabilities too). The views of a batch go through the model in one
    forward pass of ``batch_size`` inputs: ``batch_size // len(views)`` images a batch."""
    model.eval()
    out = []
    pin = device.type == "cuda"
    check_eval_precision(precision)
    n_views = len(views)
    if n_views == 0 or views[0] != "identity":
        raise ConfigError(f"predict: views must start with the identity, got {list(views)}")
    step = max(1, batch_size // n_views)
    channels_last = resolve_channels_last("auto", device, precision)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    for start in tqdm(range(0, len(images), step), desc="predict", unit="batch",
                      disable=not progress, leave=False):
        batch = images[start:start + step]
        if pin:
            batch = batch.pin_memory()
        x = normalize_batch(batch.to(device, non_blocking=pin), mean, std)
        if n_views > 1:
            x = apply_views(x, views)     # (V*B, C, H, W), view-major
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            probs = model(x).float().softmax(dim=1)
        if n_views > 1:
            probs = probs.view(n_views, len(batch), -1).mean(dim=0)
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
                 data: str | None = None, tta: str = TTA_DEFAULT, cam_method: str = DEFAULT_CAM_METHOD,
                 explain: bool = True, n_boot: int = 1000, seed: int = 0,
                 batch_size: int = 256, dataset: Dataset | None = None,
                 run: LoadedRun | None = None, out: runs.EvaluationPaths | None = None,
                 progress: bool = True, precision: str = EVAL_PRECISION,
                 class_map: Mapping[str, str] | None = None,
                 explain_protocol: str = "fast") -> artifacts.Evaluation:
    """Run the checkpoint on ``split``; write predictions.csv, metrics.json, cams.npz (the
    gallery's maps) and viewer.json
    into ``out``: by default the run's own evaluation of that split, or for other ``data``
    ``reports/NAME/external-<data name>/`` (never the run's own files). ``tta`` "on" averages
    the probabilities over the views the run's training augmentation declared valid
    (``views_for``; the val split's operating points too), recorded as ``tta_views``."""
    timings: dict[str, float] = {}
    if out is None:
        out = paths.external(data) if data is not None else paths.evaluation(split)
    dev = resolve_device(device)
    with _timed(timings, "load"):
        run = run or load_run(paths, device=dev)
        # val is read for the operating points; external data may have only the one split.
        wanted = [split] + (["val"] if split != "val" and data is None else [])
        if dataset is None:
            # train too, for the test images that duplicate training images (its decode is
            # cached by training, so this costs a read)
            if split == "test" and data is None and "train" in _own_splits(run):
                wanted.append("train")
            dataset = dataset_for_run(run, splits=wanted, data=data, class_map=class_map)
    if split not in dataset.splits:
        raise DataError(f"{dataset.source}: has no {split!r} split; available: {', '.join(dataset.splits)}")
    target = dataset.splits[split]
    if len(target) == 0:
        raise DataError(f"{dataset.source}: the {split!r} split is empty")
    _check_compatible(run, dataset)
    mean, std = run.meta["mean"], run.meta["std"]
    class_names = list(run.meta["class_names"])
    task = run.meta["task"]   # an older meta's default is set on load (artifacts)
    views = views_for(run, tta, image_shape=target.images.shape)
    if tta == "on" and len(views) == 1:
        logger.info("test-time augmentation: %s, so the image itself is the only valid view "
                    "(nothing to average)", "the weights were imported (their training augmentation is "
                    "unknown)" if run.meta.get("imported") else "the run was trained with no flip or quarter turn")

    with _timed(timings, "predict"):
        probs = predict(run.model, target.images, mean=mean, std=std, device=dev,
                        batch_size=batch_size, views=views, progress=progress, precision=precision)
    check_outputs(probs, target.ids, path=run.checkpoint.path)
    artifacts.save_predictions(out, target.ids, target.labels.numpy() if target.labels is not None else None,
                               probs, class_names=class_names)

    metrics = None
    val = None
    if target.labels is not None:
        val_split = dataset.splits.get("val") if split != "val" else None
        if val_split is not None and val_split.labels is not None and len(val_split):
            with _timed(timings, "predict_val"):
                val = (val_split.labels.numpy(), predict(run.model, val_split.images, mean=mean, std=std,
                                                         device=dev, batch_size=batch_size, views=views,
                                                         progress=progress, precision=precision))
        with _timed(timings, "metrics"):
            metrics = metrics_mod.compute_all(target.labels.numpy(), probs, class_names=class_names,
                                              task=task, val=val, n_boot=n_boot, seed=seed)

    deduplicated = (_deduplicated(dataset, target, probs, class_names=class_names, task=task,
                                  val=val, n_boot=n_boot, seed=seed)
                    if split == "test" and metrics is not None else None)

    explanation = None
    # CAMs, the gallery, faithfulness and the viewer explain the plain image only: a map of an
    # average over flipped views is not a map of any one input. (They rank images by ``probs``,
    # the averaged probabilities the metrics are about.)
    if explain and target.labels is not None:
        with _timed(timings, "explain"):
            explanation = explain_and_draw(run, target, probs, out=out, method=cam_method,
                                           seed=seed, device=dev, task=task, split_name=split,
                                           precision=precision, protocol=explain_protocol)

    result: artifacts.Evaluation = {
        "schema": artifacts.EVALUATION_SCHEMA,
        "run": paths.name,
        "split": split,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(dev),
        "precision": precision,
        "tta": tta == "on",
        "tta_views": list(views),
        "checkpoint": {"path": str(run.checkpoint.path), "sha256": run.sha256,
                       "epoch": run.meta["epoch"]},
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
        "architecture": _architecture(run),
    }
    if deduplicated is not None:
        result["deduplicated"] = deduplicated
    artifacts.save_evaluation(out, result)
    logger.debug("wrote %s and %s", out.predictions, out.metrics)
    return result


def _own_splits(run: LoadedRun) -> set[str]:
    from .data import source_splits

    resolved = run.meta.get("data", {}).get("dataset")
    try:
        return source_splits(replace(run.config.data, dataset=str(resolved)) if resolved else run.config.data)
    except DataError:
        return set()


def _deduplicated(dataset: Dataset, target: Split, probs: np.ndarray, *, class_names: list[str],
                  task: str, val: metrics_mod.ValSplit | None, n_boot: int,
                  seed: int) -> artifacts.Deduplicated | None:
    """The test metrics without the test images that duplicate a train/val image; None
    when no image does (or train and val are not loaded)."""
    from .data.summary import OVERLAP_METHOD, overlap_with_test

    with_test = replace(dataset, splits={k: v for k, v in dataset.splits.items()} | {"test": target})
    found = overlap_with_test(with_test)
    if found is None or not found[0]:
        return None
    ids, n_exact, n_near = found
    leaked = set(ids)
    keep = np.array([i not in leaked for i in target.ids])
    y = target.labels.numpy()[keep] if target.labels is not None else np.array([])
    try:
        kept = metrics_mod.compute_all(y, probs[keep], class_names=class_names, task=task, val=val,
                                       n_boot=n_boot, seed=seed) if keep.sum() >= 2 else None
    except XReportError as exc:   # e.g. nothing of a class is left: said, not scored
        logger.warning("test metrics without the duplicated images not computed: %s", exc)
        kept = None
    logger.info("test split without %d images that duplicate train/val images (%d exact, %d near): "
                "%d images", len(ids), n_exact, n_near, int(keep.sum()))
    return {"method": OVERLAP_METHOD, "removed": len(ids),
            "exact": n_exact, "near": n_near, "n": int(keep.sum()), "metrics": kept}


def check_report_options(*, split: str = "test", cam_method: str | None = None,
                         device: str | None = None, templates: Path | None = None,
                         explain_protocol: str = "fast", tta: str = TTA_DEFAULT) -> None:
    """The options of evaluate/build that can be checked without the data: before any write."""
    _check_tta(tta)
    if split not in DATA_SPLITS:
        raise ConfigError(f"--split {split!r} is not one of {', '.join(DATA_SPLITS)}")
    if cam_method is not None and cam_method not in cam_methods():
        raise ConfigError(f"--cam {cam_method!r} is not one of {', '.join(cam_methods())}")
    if explain_protocol not in EXPLAIN_CHOICES:
        raise ConfigError(f"--explain {explain_protocol!r} is not one of {', '.join(EXPLAIN_CHOICES)}")
    if device is not None:
        resolve_device(device)
    if templates is not None and not Path(templates).is_dir():
        raise ConfigError(f"--templates {templates}: not a folder")


def cached_metrics(out: runs.EvaluationPaths, run: LoadedRun, dataset: Dataset, *, cam_method: str | None,
                   split: str, need_explain: bool = True,
                   precision: str | None = EVAL_PRECISION,
                   explain_protocol: str | None = None,
                   tta: str | None = TTA_DEFAULT) -> artifacts.Evaluation | None:
    """An evaluation's metrics.json when it was made from this checkpoint, these data, this
    CAM method (with its viewer data), this explanation protocol and these test-time views
    (``tta`` None accepts whichever views it averaged).

    ``cam_method`` None accepts whichever method the file holds; ``precision`` None accepts
    whichever inference precision it was made in (one not recorded is not this one);
    ``explain_protocol`` None whichever protocol its checks ran (compared by the settings
    recorded, so older files are judged too). A missing, stale (older
    schema) or damaged file is not fresh: the caller evaluates again and overwrites it.
    """
    if not (out.metrics.is_file() and out.predictions.is_file()):
        return None
    try:
        cached = artifacts.load_evaluation(out, class_names=run.meta["class_names"])
    except ReportError as exc:
        logger.info("evaluating again: %s", exc)
        return None
    explain = cached.get("explain")
    labelled = cached["metrics"] is not None
    # `compare` evaluates without CAMs; a report needs them whenever the split has labels.
    if explain is None:
        explain_ok = not (need_explain and labelled)
    else:
        viewer = explain["viewer"]
        # An evaluation from before the viewer existed is redone once to add it.
        viewer_ok = (not need_explain or len(run.meta["class_names"]) > REPORT_CLASSES   # none made
                     or (viewer is not None and (out.folder / viewer["file"]).is_file()))
        explain_ok = ((cam_method is None or explain["method"] == cam_method) and viewer_ok
                      and (explain_protocol is None or protocol_matches(explain, explain_protocol)))
    fresh = (cached.get("checkpoint", {}).get("sha256") == run.sha256
             and cached.get("data", {}).get("fingerprint") == dataset.fingerprint
             and cached.get("split") == split
             and (precision is None or cached["precision"] == precision)
             and (tta is None or artifacts.tta_views_of(cached) == list(
                 views_for(run, tta, image_shape=_split_shape(run, dataset, split))))
             and explain_ok)
    return cached if fresh else None


def _split_shape(run: LoadedRun, dataset: Dataset, split: str) -> Sequence[int]:
    """The shape ``evaluate_run`` will see for ``split`` (its views depend on it being square)."""
    if split in dataset.splits:
        return tuple(dataset.splits[split].images.shape)
    size = int(run.meta["image_size"])
    return (size, size)


def evaluate_report(paths: runs.RunPaths, *, split: str = "test", device: str = "auto",
                    data: str | None = None, tta: str = TTA_DEFAULT, cam_method: str = DEFAULT_CAM_METHOD,
                    explain: bool = True, out: Path | None = None, progress: bool = True,
                    precision: str = EVAL_PRECISION,
                    class_map: Mapping[str, str] | None = None,
                    explain_protocol: str = "fast") -> tuple[artifacts.Evaluation, runs.EvaluationPaths]:
    """``xreport evaluate``: options checked first, then under the folder's lock (the same as
    ``build``) the predictions, metrics and CAMs are written to a staging copy and swapped in
    whole. They go to ``out`` when given, else to the run's own evaluation of ``split`` or,
    for other ``data``, to ``reports/NAME/external-<data name>/``: never over the run's own
    files. Returns the evaluation and where its files now are."""
    check_report_options(split=split, cam_method=cam_method if explain else None, device=device,
                         explain_protocol=explain_protocol, tta=tta)
    check_eval_precision(precision)
    if out is not None:
        out = check_external_out(Path(out), paths)
        with runs.run_lock(out, what="evaluation"), runs.staged_folder(out) as staged:
            result = evaluate_run(paths, split=split, device=device, data=data, tta=tta, cam_method=cam_method,
                                  explain=explain, out=runs.EvaluationPaths(staged, paths.name),
                                  progress=progress, precision=precision, class_map=class_map,
                                  explain_protocol=explain_protocol)
        return result, runs.EvaluationPaths(out, paths.name)
    final = paths.external(data) if data is not None else paths.evaluation(split)
    with runs.run_lock(paths.report_dir, what="report"), runs.staged_report(paths) as staged:
        where = staged.external(data) if data is not None else staged.evaluation(split)
        result = evaluate_run(staged, split=split, device=device, data=data, tta=tta,
                              cam_method=cam_method, explain=explain, out=where, progress=progress,
                              precision=precision, class_map=class_map, explain_protocol=explain_protocol)
    return result, final


# What an evaluation writes into its folder: an --out holding anything else is the user's.
_EVALUATION_FILES = frozenset({"predictions.csv", "metrics.json", "viewer.json", "cams.npz", "cams",
                               ".lock"})


def check_external_out(out: Path, paths: runs.RunPaths) -> Path:
    """The real folder ``evaluate --out`` may write, checked before anything is created.

    A symlink is written through: its target receives the files and the link stays (the
    checks below apply to the target). Refused: the run's own folders (and any folder that
    holds them), the current folder and those above it, a file, and a folder that holds
    anything an evaluation does not write (the user's files are never replaced)."""
    real = out.resolve()
    if real.exists() and not real.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise ConfigError(f"--out {out}: is the current folder (or one above it); give a new "
                          "folder for the evaluation's files")
    own = [paths.report_dir, paths.run_dir]
    for folder in own:
        folder = folder.resolve()
        if real == folder or real in folder.parents or folder in real.parents:
            raise ConfigError(f"--out {out}: is {'inside ' if folder in real.parents else ''}the run's own "
                              f"folder {folder}; external evaluations are kept apart from the run's "
                              "files, give another folder")
    if real.is_dir():
        foreign = sorted(p.name for p in real.iterdir() if p.name not in _EVALUATION_FILES)
        if foreign:
            raise ConfigError(f"--out {out}: holds files that are not an evaluation's ("
                              f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); give an "
                              "empty or new folder, or the folder of an earlier `evaluate --out`")
    if real != out.absolute():
        logger.info("--out %s is a link: writing through it to %s", out, real)
    return real


def _check_compatible(run: LoadedRun, dataset: Dataset) -> None:
    meta_classes = len(run.meta["class_names"])
    if dataset.num_classes != meta_classes:
        raise DataError(f"{dataset.source}: has {dataset.num_classes} classes but the checkpoint "
                        f"was trained on {meta_classes} ({', '.join(run.meta['class_names'])})")
    if dataset.channels != int(run.meta["in_channels"]):
        raise DataError(f"{dataset.source}: images have {dataset.channels} channels but the "
                        f"checkpoint expects {run.meta['in_channels']}")


def _architecture(run: LoadedRun) -> artifacts.ArchitectureSummary | None:
    """The model's stages, params and FLOPs at the run's input size, while it is loaded (the
    report and the study read them instead of rebuilding the model); None, with a warning,
    for a model the summary does not know."""
    from .models import architecture_summary

    try:
        return architecture_summary(run.model, run.meta["image_size"], run.meta["in_channels"])
    except (XReportError, KeyError, ValueError, RuntimeError) as exc:
        logger.warning("model summary not recorded: %s", exc)
        return None


class NormalizedView:
    """Normalised float images on demand: explain only indexes the gallery and its samples,
    so the whole split never exists as float (10,000 RGB 224 px images would be 6 GB)."""

    def __init__(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> None:
        self.images, self.mean, self.std = images, mean, std
        self.shape = images.shape

    def __getitem__(self, index: int | slice | torch.Tensor) -> torch.Tensor:
        return normalize_batch(self.images[index], self.mean, self.std)


# The explanation checks' protocols: images, curve steps, random maps per image and cascade
# seeds. The user chooses one (`--explain`, default "fast"); the default is the same on every
# device so that a verdict does not depend on where it was computed (the report states the
# protocol). Both test the same 64 faithfulness and 16 sanity images, so the paired verdicts
# have the same power (it comes from the images); "full" draws each curve at 9 instead of 3
# removal levels, averages 4 instead of 2 random reference maps and repeats the cascade over
# 5 instead of 3 initialisations: smoother curves, steadier references, ~3x the passes.
# Faithfulness costs 4 * (steps - 1) * (1 + random maps) forward passes per image. Only the
# batch size (memory, not results) follows the device.
class ExplainProtocol(TypedDict):
    faithfulness_n: int
    sanity_n: int
    faithfulness_steps: int
    random_per_image: int
    sanity_seeds: int


EXPLAIN_PROTOCOLS: dict[str, ExplainProtocol] = {
    "fast": {"faithfulness_n": 64, "sanity_n": 16, "faithfulness_steps": 4, "random_per_image": 2,
             "sanity_seeds": 3},
    "full": {"faithfulness_n": 64, "sanity_n": 16, "faithfulness_steps": 10, "random_per_image": 4,
             "sanity_seeds": 5},
}
EXPLAIN_DEFAULT = "fast"
EXPLAIN_PROTOCOL = EXPLAIN_PROTOCOLS[EXPLAIN_DEFAULT]
EXPLAIN_CHOICES = tuple(EXPLAIN_PROTOCOLS)
EXPLAIN_BATCH = {"cpu": 128, "cuda": 256}


def protocol_matches(explain: artifacts.Explanation, protocol: str) -> bool:
    """Whether an evaluation's checks ran with ``protocol``'s settings (read from the figures
    it recorded, so files from before the choice are judged too)."""
    wanted = EXPLAIN_PROTOCOLS[protocol]
    faith, sanity = explain["faithfulness"], explain["sanity"]
    if not faith or not sanity:
        return False
    return (faith.get("steps") == wanted["faithfulness_steps"]
            and faith["random_maps"].get("per_image") == wanted["random_per_image"]
            and sanity["seeds"] == wanted["sanity_seeds"])


def explain_and_draw(run: LoadedRun, split: Split, probs: np.ndarray, *, out: runs.EvaluationPaths,
                     method: str, seed: int, device: torch.device, task: artifacts.Task = "binary",
                     split_name: str = "test", precision: str = EVAL_PRECISION,
                     protocol: str = EXPLAIN_DEFAULT) -> ExplainSummary:
    """CAM gallery, faithfulness, sanity check (and localisation on phantom data), and the
    interactive viewer's data. The gallery's maps go to cams.npz (``artifacts.GalleryCams``),
    from which the figures stage draws the overlays: evaluate computes and draws nothing."""
    from . import explain

    layer, layer_name = cam_target_layer(run.model, input_size=int(run.meta["image_size"]),
                                         in_channels=int(run.meta["in_channels"]))
    x = NormalizedView(split.images, run.meta["mean"], run.meta["std"])
    batch_size = EXPLAIN_BATCH["cuda" if device.type == "cuda" else "cpu"]
    if protocol not in EXPLAIN_PROTOCOLS:
        raise ConfigError(f"--explain {protocol!r} is not one of {', '.join(EXPLAIN_CHOICES)}")
    summary, gallery_cams = explain.explain_split(
        run.model, x, y_true=split.known_labels().numpy(), probs=probs,
        class_names=list(run.meta["class_names"]), target_layer=layer, layer_name=layer_name,
        method=method, masks=split.masks, seed=seed, device=device, batch_size=batch_size,
        precision=precision, **EXPLAIN_PROTOCOLS[protocol])
    summary["protocol"] = protocol
    timings = summary["timings"]
    _save_gallery_cams(summary["gallery"], gallery_cams, split, out=out)
    if len(run.meta["class_names"]) > REPORT_CLASSES:
        # A map per class for every viewer image: 1000 classes made a 73 MB viewer.json.
        logger.info("interactive viewer left out: %d classes (it shows up to %d)",
                    len(run.meta["class_names"]), REPORT_CLASSES)
        summary["viewer"] = None
        return summary
    with _timed(timings, "viewer_s"):
        summary["viewer"] = write_viewer_data(run, split, probs, layer=layer, layer_name=layer_name,
                                              gallery_rows=[e["index"] for e in summary["gallery"]],
                                              out=out, method=method, task=task, split_name=split_name,
                                              device=device)
    return summary


def _save_gallery_cams(gallery: Sequence[GalleryPick], cams: torch.Tensor, split: Split, *,
                       out: runs.EvaluationPaths) -> None:
    """cams.npz: each gallery entry's image (and lesion mask) and its maps, in the order of
    the entries' ``maps`` (``explain.explain_split``); each entry gets its image ``id`` and
    whether its overlays will outline a known lesion."""
    rows = torch.tensor([entry["index"] for entry in gallery], dtype=torch.long)
    masks = None if split.masks is None else split.masks[rows].numpy().astype(bool)
    for i, entry in enumerate(gallery):
        entry["id"] = split.ids[entry["index"]]
        entry["lesion_outline"] = masks is not None and bool(masks[i].any())
    counts = np.array([len(entry.get("maps", [])) for entry in gallery], dtype=np.int64)
    artifacts.save_gallery_cams(out, artifacts.GalleryCams(
        images=split.images[rows].numpy(), maps=cams.detach().cpu().float().numpy(),
        counts=counts, masks=masks), gallery=cast(Sequence[artifacts.GalleryEntry], gallery))


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
