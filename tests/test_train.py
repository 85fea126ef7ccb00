"""The training loop on tiny phantom data: run folder, determinism, resume, NaN stop."""
from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from xreport import config as config_mod
from xreport import artifacts, runs
from xreport import train as train_mod
from xreport.config import AugmentConfig, DataConfig, RunConfig, TrainConfig
from xreport.data import load_dataset, normalize_batch
from xreport.data.base import Dataset, Split
from xreport.errors import ConfigError, RunError, TrainingError
from xreport.models import model_from_meta, load_weights
from xreport.device import cpu_has_fast_bf16, resolve_channels_last, resolve_precision
from xreport import metrics as metrics_mod
from xreport.train import (HISTORY_COLUMNS, EpochEnd, batches, epoch_indices, lr_factor, shard, tally,
                           train)

META_KEYS = ("arch", "num_classes", "class_names", "class_names_i18n",
             "task", "in_channels", "image_size", "small_input_stem", "dropout", "pretrained",
             "mean", "std", "preprocess", "pipeline", "data", "data_fingerprint", "epoch",
             "val_metrics", "selected_by", "seed", "config", "versions", "params", "created",
             "command")


def tiny_config(name: str = "tiny", **train_changes: object) -> RunConfig:
    """Phantom 16 px, 16 train / 12 val images, 2 steps an epoch: about a second an epoch.

    One thread: on a busy 2-core machine two spinning OpenMP threads run ~5x slower.
    """
    train_cfg = replace(TrainConfig(epochs=3, batch_size=8, lr=3e-3, seed=7, warmup_epochs=1,
                                    precision="fp32", num_threads=1), **train_changes)
    return RunConfig(name=name, image_size=16,
                     data=DataConfig(phantom_size=16, phantom_train=16, phantom_val=12,
                                     phantom_test=4, phantom_seed=3),
                     augment=AugmentConfig(rotation=5.0, noise=0.01),
                     train=train_cfg)


def _rows(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """History without the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (config, root, result)
    root = tmp_path_factory.mktemp("checkpoints")
    cfg = tiny_config()
    return cfg, root, train(cfg, checkpoints_root=root, command=["xreport", "train", "tiny"])


# ---------------------------------------------------------------- the run folder

def test_run_writes_every_file(straight_run) -> None:  # noqa: ANN001
    cfg, root, result = straight_run
    paths = runs.RunPaths(cfg.name, checkpoints_root=root)
    assert result.run_dir == paths.run_dir
    for path in (paths.config, paths.best, paths.last, paths.history, paths.class_distribution,
                 paths.train_log):
        assert path.is_file(), path
    assert config_mod.load(paths.config) == cfg
    with open(paths.history, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == HISTORY_COLUMNS and [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["val_loss"]) for r in rows] == [r["val_loss"] for r in result.history]
    distribution = json.loads(paths.class_distribution.read_text())
    assert distribution["class_names"] == ["normal", "lesion"]
    assert sum(distribution["splits"]["train"]) == 16
    log = paths.train_log.read_text()
    assert "epoch 3/3" in log and "best epoch" in log
    assert not list(paths.run_dir.glob("*.tmp"))


def test_best_checkpoint_reloads_and_reproduces_its_val_metrics(straight_run) -> None:  # noqa: ANN001
    cfg, root, result = straight_run
    paths = runs.RunPaths(cfg.name, checkpoints_root=root)
    ckpt = runs.load_checkpoint(paths.best)
    meta = artifacts.load_checkpoint_meta(paths.best)
    assert set(META_KEYS) <= set(meta)
    # The run's settings are stored once, in its config; the loaded meta shows them from there.
    assert not set(artifacts.CONFIG_SETTINGS) & set(ckpt.meta)
    assert (meta["seed"], meta["dropout"], meta["preprocess"]) == (
        cfg.train.seed, cfg.model.dropout, ckpt.meta["config"]["preprocess"])
    assert meta["epoch"] == result.best_epoch and meta["selected_by"] == "val_auc"
    assert meta["small_input_stem"] is True and meta["in_channels"] == 1
    assert meta["data"]["dataset"] == "phantom" and meta["command"] == ["xreport", "train", "tiny"]
    assert not ckpt.extra  # resume state lives in last.pt only
    best_row = result.history[result.best_epoch - 1]
    assert result.best_score == best_row["val_auc"] == max(r["val_auc"] for r in result.history)

    model = model_from_meta(meta, path=paths.best).eval()
    load_weights(model, ckpt.state_dict, path=paths.best)
    val = load_dataset(cfg.data, cfg.preprocess, image_size=cfg.image_size, splits=("val",))
    split = val.splits["val"]
    assert val.fingerprint == meta["data_fingerprint"]
    with torch.no_grad():
        probs = model(normalize_batch(split.images, meta["mean"], meta["std"])).softmax(1)
    assert roc_auc_score(split.labels.numpy(), probs[:, 1].numpy()) == pytest.approx(meta["val_metrics"]["auc"])
    acc = float((probs.argmax(1) == split.labels).float().mean())
    assert acc == pytest.approx(meta["val_metrics"]["acc"])


def test_last_checkpoint_holds_resume_state(straight_run) -> None:  # noqa: ANN001
    cfg, root, result = straight_run
    ckpt = runs.load_checkpoint(runs.RunPaths(cfg.name, checkpoints_root=root).last)
    extra = ckpt.extra
    assert extra["epoch"] == 3 and extra["global_step"] == 6
    assert {"optimizer", "scheduler", "scaler", "rng"} <= set(extra)
    assert _rows(extra["history"]) == _rows(result.history)


# ---------------------------------------------------------------- reproducibility

def test_same_seed_gives_the_same_history_and_weights(straight_run, tmp_path: Path) -> None:  # noqa: ANN001
    cfg, root, result = straight_run
    again = train(cfg, checkpoints_root=tmp_path)
    assert _rows(again.history) == _rows(result.history)
    first = runs.load_checkpoint(runs.RunPaths(cfg.name, checkpoints_root=root).last).state_dict
    second = runs.load_checkpoint(runs.RunPaths(cfg.name, checkpoints_root=tmp_path).last).state_dict
    assert _same_tensors(first, second)


class _Killed(Exception):
    pass


def test_resume_reaches_the_uninterrupted_result(straight_run, tmp_path: Path) -> None:  # noqa: ANN001
    cfg, root, result = straight_run

    def kill_after_two(end: EpochEnd) -> None:
        if end.row["epoch"] == 2:
            raise _Killed

    with pytest.raises(_Killed):
        train(cfg, checkpoints_root=tmp_path, on_epoch_end=kill_after_two)
    paths = runs.RunPaths(cfg.name, checkpoints_root=tmp_path)
    assert runs.load_checkpoint(paths.last).extra["epoch"] == 2
    resumed = train(cfg, checkpoints_root=tmp_path, resume=True)
    assert _rows(resumed.history) == _rows(result.history)
    assert resumed.best_epoch == result.best_epoch
    straight = runs.RunPaths(cfg.name, checkpoints_root=root)
    for name in ("last", "best"):
        assert _same_tensors(runs.load_checkpoint(getattr(paths, name)).state_dict,
                             runs.load_checkpoint(getattr(straight, name)).state_dict)
    with open(paths.history, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    # Resuming a finished run trains nothing more.
    assert _rows(train(cfg, checkpoints_root=tmp_path, resume=True).history) == _rows(result.history)


def test_resume_refuses_a_changed_recipe(straight_run, tmp_path: Path) -> None:  # noqa: ANN001
    cfg, root, _result = straight_run
    shutil.copytree(root / cfg.name, tmp_path / cfg.name)
    changed = replace(cfg, train=replace(cfg.train, lr=1e-2))
    with pytest.raises(ConfigError, match="train.lr"):
        train(changed, checkpoints_root=tmp_path, resume=True)


def test_resume_refuses_another_process_count(straight_run, tmp_path: Path) -> None:  # noqa: ANN001
    cfg, root, _result = straight_run
    shutil.copytree(root / cfg.name, tmp_path / cfg.name)
    paths = runs.RunPaths(cfg.name, checkpoints_root=tmp_path)
    ckpt = runs.load_checkpoint(paths.last)
    runs.save_checkpoint(paths.last, state_dict=ckpt.state_dict,
                         meta={**ckpt.meta, "world_size": 2}, extra=ckpt.extra)
    before = runs.sha256_file(paths.last)
    with pytest.raises(ConfigError, match=r"last\.pt: trained with 2 process\(es\), resuming with 1.*"
                                          r"torchrun --nproc_per_node 2"):
        train(cfg, checkpoints_root=tmp_path, resume=True)
    assert runs.sha256_file(paths.last) == before


# ---------------------------------------------------------------- model choice on small val splits

@pytest.mark.parametrize("averaging", ["ema", "swa"])
def test_weight_average_is_validated_saved_and_resumed(tmp_path: Path, averaging: str) -> None:
    cfg = tiny_config(f"avg-{averaging}", epochs=4, weight_averaging=averaging, select_smoothing=2)
    straight = train(cfg, checkpoints_root=tmp_path / "a")
    paths = runs.RunPaths(cfg.name, checkpoints_root=tmp_path / "a")
    best, last = runs.load_checkpoint(paths.best), runs.load_checkpoint(paths.last)
    meta = artifacts.load_checkpoint_meta(paths.best)
    assert meta["weight_averaging"] == averaging and meta["select_smoothing"] == 2
    assert "averaged" in last.extra
    # The selected model is the average, not the last trained weights.
    averaged = {k.removeprefix("module."): v for k, v in last.extra["averaged"].items() if k.startswith("module.")}
    if best.meta["epoch"] == 4:
        assert _same_tensors(best.state_dict, averaged)
        assert not _same_tensors(best.state_dict, last.state_dict)
    # Selection on the mean of 2 epochs: the best score is such a mean.
    scores = [r["val_auc"] for r in straight.history]
    e = straight.best_epoch
    assert straight.best_score == pytest.approx(sum(scores[max(0, e - 2):e]) / len(scores[max(0, e - 2):e]))

    def kill_after_two(end: EpochEnd) -> None:
        if end.row["epoch"] == 2:
            raise _Killed

    with pytest.raises(_Killed):
        train(cfg, checkpoints_root=tmp_path / "b", on_epoch_end=kill_after_two)
    resumed = train(cfg, checkpoints_root=tmp_path / "b", resume=True)
    assert _rows(resumed.history) == _rows(straight.history)
    other = runs.RunPaths(cfg.name, checkpoints_root=tmp_path / "b")
    assert _same_tensors(runs.load_checkpoint(other.best).state_dict, best.state_dict)


def test_smoothed_score_and_the_val_size_rule() -> None:
    from xreport.recipe import SMALL_VAL_BELOW
    from xreport.train import resolve_weight_averaging, smoothed_score, swa_start_epoch

    history = [{"val_auc": v} for v in (0.5, 0.9, 0.6, float("nan"))]
    assert smoothed_score(history[:2], "val_auc", 1) == 0.9
    assert smoothed_score(history[:3], "val_auc", 3) == pytest.approx((0.5 + 0.9 + 0.6) / 3)
    assert smoothed_score(history, "val_auc", 2) == 0.6          # a NaN epoch is left out
    assert resolve_weight_averaging("auto", n_val=78) == "ema"
    assert resolve_weight_averaging("auto", n_val=SMALL_VAL_BELOW) == "none"
    assert resolve_weight_averaging("swa", n_val=78) == "swa"
    assert swa_start_epoch(40) == 31 and swa_start_epoch(1) == 1


# ---------------------------------------------------------------- stopping and errors

def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(epochs=2)
    paths = runs.RunPaths(cfg.name, checkpoints_root=tmp_path)
    digests: dict[str, str] = {}

    def poison_after_first(end: EpochEnd) -> None:
        digests.update({p.name: runs.sha256_file(p) for p in (paths.best, paths.last, paths.history)})
        monkeypatch.setattr(torch.nn.functional, "cross_entropy",
                            lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))

    with pytest.raises(TrainingError, match=r"epoch 2, step 1 \(optimiser step 3\)"):
        train(cfg, checkpoints_root=tmp_path, on_epoch_end=poison_after_first)
    assert digests == {p.name: runs.sha256_file(p) for p in (paths.best, paths.last, paths.history)}
    assert runs.load_checkpoint(paths.last).meta["epoch"] == 1


def test_huge_learning_rate_is_caught_as_a_training_error(tmp_path: Path) -> None:
    cfg = tiny_config(epochs=1, lr=1e30, warmup_epochs=0, schedule="none", optimizer="sgd",
                      momentum=0.0)
    with pytest.raises(TrainingError, match="epoch 1.*no checkpoint was written.*train.lr"):
        train(cfg, checkpoints_root=tmp_path)
    assert not runs.RunPaths(cfg.name, checkpoints_root=tmp_path).best.exists()


def test_max_steps_stops_mid_epoch(tmp_path: Path) -> None:
    capped = train(tiny_config("capped", epochs=5, max_steps=3), checkpoints_root=tmp_path)
    assert len(capped.history) == 2  # 2 steps in epoch 1, 1 in epoch 2
    ckpt = runs.load_checkpoint(tmp_path / "capped" / "last.pt")
    assert ckpt.extra["global_step"] == 3 and "max_steps" in ckpt.extra["stopped"]


def test_early_stopping_on_a_flat_selection_metric(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    flat = {"val_loss": 0.7, "val_acc": 0.5, "val_f1": 0.4, "val_auc": 0.6, "val_bacc": 0.5,
            "val_qwk": 0.0}
    monkeypatch.setattr(train_mod, "evaluate_split", lambda loop, split, *model: dict(flat))
    result = train(tiny_config("flat", epochs=5, early_stopping=1),
                   checkpoints_root=tmp_path)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.best_epoch == 1 and result.best_score == 0.6
    stopped = runs.load_checkpoint(tmp_path / "flat" / "last.pt").extra["stopped"]
    assert stopped.startswith("early stopping")


def test_existing_run_needs_resume_or_overwrite(straight_run, tmp_path: Path) -> None:  # noqa: ANN001
    cfg, root, _result = straight_run
    with pytest.raises(RunError, match="--resume"):
        train(cfg, checkpoints_root=root)
    with pytest.raises(RunError, match="nothing to resume"):
        train(cfg, checkpoints_root=tmp_path, resume=True)


def _random_dataset(num_classes: int, *, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)

    def split(name: str, n: int) -> Split:
        labels = torch.arange(n) % num_classes
        images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
        return Split(name, images, labels, [f"{name}-{i}" for i in range(n)])

    return Dataset(name="random", source="memory", kind="memory",
                   class_names=[f"c{i}" for i in range(num_classes)], task="multiclass",
                   splits={"train": split("train", 18), "val": split("val", 12)},
                   fingerprint="random")


@pytest.mark.parametrize("imbalance", ["sampler", "class_weights"])
def test_in_memory_multiclass_dataset_with_imbalance_handling(tmp_path: Path, imbalance: str) -> None:
    # bf16 autocast and channels-last run here too (the CPU auto choice where supported).
    cfg = tiny_config("multi", epochs=1, max_steps=2, imbalance=imbalance, select_metric="val_f1",
                      early_stopping=1, precision="bf16", channels_last="on")
    result = train(cfg, checkpoints_root=tmp_path, dataset=_random_dataset(3, seed=1))
    row = result.history[0]
    assert 0.0 <= row["val_auc"] <= 1.0 and result.best_score == row["val_f1"]
    meta = runs.load_checkpoint(tmp_path / "multi" / "best.pt").meta
    assert meta["num_classes"] == 3 and meta["in_channels"] == 3 and len(meta["mean"]) == 3
    assert meta["precision"] == "bf16" and meta["channels_last"] is True


# ---------------------------------------------------------------- pure helpers

def test_lr_schedule_warmup_cosine_and_step() -> None:
    cfg = TrainConfig(epochs=4, warmup_epochs=1, schedule="cosine")
    factors = [lr_factor(s, cfg=cfg, steps_per_epoch=2) for s in range(8)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == 1.0 and factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 6)))
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))
    step = TrainConfig(epochs=6, schedule="step", step_size=2, gamma=0.5)
    assert [lr_factor(s, cfg=step, steps_per_epoch=1) for s in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_sampling_sharding_and_batches() -> None:
    g = torch.Generator().manual_seed(0)
    order = epoch_indices(10, generator=g)
    assert sorted(order.tolist()) == list(range(10))
    weights = torch.tensor([0.0] * 9 + [1.0], dtype=torch.float64)
    assert set(epoch_indices(10, generator=g, weights=weights).tolist()) == {9}
    parts = [shard(order, rank=r, world_size=3) for r in range(3)]
    assert {len(p) for p in parts} == {4} and set(torch.cat(parts).tolist()) == set(range(10))
    assert [len(b) for b in batches(torch.arange(9), 4)] == [4, 4]   # a lone image is dropped
    assert [len(b) for b in batches(torch.arange(10), 4)] == [4, 4, 2]


def test_accuracy_and_macro_f1_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 50), rng.integers(0, 3, 50)   # class 3 never predicted
    scores = metrics_mod.selection_scores(tally(torch.from_numpy(p), torch.from_numpy(y), 4).numpy())
    assert scores["accuracy"] == pytest.approx(float((y == p).mean()))
    assert scores["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", labels=range(4),
                                                        zero_division=0))
    assert math.isnan(metrics_mod.selection_auc(np.zeros(4, dtype=int), np.full((4, 2), 0.5)))


class _LogitsSplit:
    """A val split whose 'images' are the logits themselves (the model is the identity)."""

    def __init__(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = logits, labels

    def __len__(self) -> int:
        return len(self.labels)

    def known_labels(self) -> torch.Tensor:
        return self.labels


def _val_row(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """What train records for a val split with these logits, through evaluate_split itself."""
    from types import SimpleNamespace

    setup = train_mod._Setup(device=torch.device("cpu"), precision="fp32", channels_last=False)
    loop = SimpleNamespace(setup=setup, bare=torch.nn.Identity(), num_classes=logits.shape[1],
                           config=SimpleNamespace(train=SimpleNamespace(batch_size=4)),
                           prepare=lambda images, augment_generator: images)
    return train_mod.evaluate_split(loop, _LogitsSplit(logits, labels))  # type: ignore[arg-type]


def _reported(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    """metrics.compute_all's figures (what the report shows) on the same predictions."""
    names = [f"c{i}" for i in range(logits.shape[1])]
    m = metrics_mod.compute_all(labels.numpy(), logits.softmax(1).numpy(), class_names=names,
                                task="ordinal", n_boot=0)
    assert m["ordinal"] is not None
    return {"val_acc": m["accuracy"]["value"], "val_f1": m["macro_avg"]["f1"]["value"],
            "val_bacc": m["balanced_accuracy"]["value"], "val_auc": m["roc_auc"]["value"],
            "val_qwk": m["ordinal"]["qwk"]["value"]}


def test_val_figures_train_records_equal_the_reported_ones() -> None:
    """The checkpoint is chosen by the same numbers the report shows for the same predictions."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 3, generator=g) * 2
    labels = torch.randint(0, 3, (40,), generator=g)
    row, reported = _val_row(logits, labels), _reported(logits, labels)
    assert all(v is not None for v in reported.values())
    assert {k: row[k] for k in reported} == reported


def test_val_figures_keep_their_rules_when_a_class_is_absent() -> None:
    """Val has no class 2 and every image is predicted class 0: the report calls macro-F1 and
    balanced accuracy undefined; selection counts the absent class's F1 as 0 and averages
    recall over the classes present, so a checkpoint can still be chosen."""
    labels = torch.tensor([0, 0, 0, 1, 1, 0])
    logits = torch.tensor([[3.0, 0.0, 0.0]] * 6)
    row, reported = _val_row(logits, labels), _reported(logits, labels)
    pred = np.zeros(6, dtype=int)
    assert row["val_acc"] == reported["val_acc"] == pytest.approx(4 / 6)
    assert row["val_f1"] == pytest.approx(f1_score(labels.numpy(), pred, average="macro",
                                                   labels=range(3), zero_division=0))
    assert reported["val_f1"] is None and reported["val_bacc"] is None
    assert row["val_bacc"] == pytest.approx(0.5)          # recall 1 (class 0), 0 (class 1)
    assert math.isnan(row["val_auc"]) and reported["val_auc"] is None
    assert row["val_qwk"] == reported["val_qwk"] == pytest.approx(0.0)
    empty = metrics_mod.selection_scores(np.zeros((3, 3)))
    assert math.isnan(empty["accuracy"]) and math.isnan(empty["balanced_accuracy"])
    assert math.isnan(empty["qwk"]) and empty["macro_f1"] == 0.0


def test_precision_and_layout_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_fast_bf16() else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_channels_last("auto", cpu, "fp32") is False
    assert resolve_channels_last("auto", cpu, "bf16") is True
    assert resolve_channels_last("off", torch.device("cuda"), "bf16") is False


# ---------------------------------------------------------------- ordinal head, auto recipe meta

def test_the_cumulative_link_head_trains_and_selects_on_qwk(tmp_path: Path) -> None:
    base = tiny_config("graded", epochs=2, select_metric="val_qwk")
    cfg = replace(base, data=replace(base.data, phantom_classes=3, phantom_ordinal=True),
                  model=replace(base.model, head="ordinal"))
    choices = [{"key": "train.select_metric", "value": "val_qwk", "rule": "select", "why": "task ordinal"}]
    result = train(cfg, checkpoints_root=tmp_path, recipe_choices=choices)
    ckpt = runs.load_checkpoint(runs.RunPaths("graded", checkpoints_root=tmp_path).best)
    meta = ckpt.meta
    assert meta["task"] == "ordinal" and meta["head"] == "ordinal" and meta["selected_by"] == "val_qwk"
    assert meta["recipe"] == {"name": "auto", "choices": choices}
    assert "fc.threshold_gaps" in ckpt.state_dict
    qwks = [row["val_qwk"] for row in result.history]
    assert result.best_score == max(q for q in qwks if not math.isnan(q))
    model = model_from_meta(meta)
    load_weights(model, ckpt.state_dict, path="best.pt")
    with torch.no_grad():
        probs = model.eval()(torch.rand(3, 1, 16, 16)).softmax(1)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)


def test_ordinal_default_is_a_softmax_head_on_soft_labels_and_the_loss_can_be_set(tmp_path: Path) -> None:
    base = tiny_config("graded_soft", epochs=1)
    graded = replace(base, data=replace(base.data, phantom_classes=3, phantom_ordinal=True))
    train(graded, checkpoints_root=tmp_path)
    ckpt = runs.load_checkpoint(runs.RunPaths("graded_soft", checkpoints_root=tmp_path).best)
    meta = ckpt.meta
    assert meta["task"] == "ordinal" and meta["head"] == "linear" and meta["loss"] == "soft_ordinal"
    assert meta["recipe"]["choices"] == [] and "fc.weight" in ckpt.state_dict
    plain = replace(graded, name="graded_ce", train=replace(graded.train, loss="cross_entropy"))
    train(plain, checkpoints_root=tmp_path)
    meta = runs.load_checkpoint(runs.RunPaths("graded_ce", checkpoints_root=tmp_path).best).meta
    assert meta["head"] == "linear" and meta["loss"] == "cross_entropy"
    train(replace(base, name="flat"), checkpoints_root=tmp_path)
    assert runs.load_checkpoint(runs.RunPaths("flat", checkpoints_root=tmp_path).best).meta["loss"] == "cross_entropy"


def test_batch_mixing_trains_reproducibly_and_is_recorded(tmp_path: Path) -> None:
    base = tiny_config("unmixed", epochs=2)
    mixed = replace(base, name="mixed", augment=replace(base.augment, mixup=0.4, cutmix=1.0))
    first = train(mixed, checkpoints_root=tmp_path / "a")
    again = train(mixed, checkpoints_root=tmp_path / "b")
    plain = train(base, checkpoints_root=tmp_path / "a")
    assert _rows(first.history) == _rows(again.history)
    assert [r["train_loss"] for r in first.history] != [r["train_loss"] for r in plain.history]
    meta = runs.load_checkpoint(runs.RunPaths("mixed", checkpoints_root=tmp_path / "a").best).meta
    assert meta["config"]["augment"]["mixup"] == 0.4 and meta["config"]["augment"]["cutmix"] == 1.0


def test_soft_ordinal_targets_weigh_grades_by_squared_distance() -> None:
    q = train_mod.soft_ordinal_targets(torch.tensor([0, 2, 4]), 5)
    assert torch.allclose(q.sum(1), torch.ones(3))
    assert q.argmax(1).tolist() == [0, 2, 4]                       # the true grade stays the mode
    assert q[1, 1] / q[1, 2] == pytest.approx(math.exp(-1), rel=1e-5)
    assert q[1, 0] / q[1, 2] == pytest.approx(math.exp(-4), rel=1e-5)
    assert torch.allclose(q[1], q[1].flip(0))                       # symmetric around grade 2
    assert torch.allclose(q[0], q[2].flip(0))


def test_soft_ordinal_loss_is_cross_entropy_on_the_soft_targets_and_ranks_near_misses() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 1, 0])
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5])
    loss = train_mod.SoftOrdinalLoss(4, weight=weight, label_smoothing=0.1)(logits, y)
    q = train_mod.soft_ordinal_targets(y, 4) * 0.9 + 0.1 / 4
    by_hand = -(q * weight * logits.log_softmax(1)).sum(1).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    plain = train_mod.SoftOrdinalLoss(4)
    near, far = torch.tensor([[0.0, 4.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 4.0]])
    # True grade 0: confidently predicting grade 1 costs less than grade 3; cross-entropy
    # cannot tell the two mistakes apart.
    assert plain(near, torch.tensor([0])) < plain(far, torch.tensor([0]))
    ce = torch.nn.CrossEntropyLoss()
    assert ce(near, torch.tensor([0])).item() == pytest.approx(ce(far, torch.tensor([0])).item())


def test_loss_auto_follows_the_task() -> None:
    assert train_mod.resolve_loss("auto", "ordinal") == "soft_ordinal"
    assert train_mod.resolve_loss("auto", "multiclass") == "cross_entropy"
    assert train_mod.resolve_loss("auto", "binary") == "cross_entropy"
    assert train_mod.resolve_loss("cross_entropy", "ordinal") == "cross_entropy"
    with pytest.raises(ConfigError, match="train.loss"):
        train_mod.resolve_loss("hinge", "binary")
    with pytest.raises(ConfigError, match="loss"):
        config_mod.from_dict({"train": {"loss": "hinge"}})


def test_validation_balanced_accuracy_and_qwk() -> None:
    cm = np.array([[8.0, 2.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    assert metrics_mod.selection_scores(cm)["balanced_accuracy"] == pytest.approx((0.8 + 0.75) / 2)
    from sklearn.metrics import cohen_kappa_score

    y = [0, 0, 1, 2, 2, 1, 0, 2]
    p = [0, 1, 1, 2, 1, 1, 0, 0]
    cm2 = tally(torch.tensor(p), torch.tensor(y), 3).numpy()
    assert metrics_mod.selection_scores(cm2)["qwk"] == pytest.approx(
        cohen_kappa_score(y, p, weights="quadratic"))


def test_sqrt_sampler_draws_in_proportion_to_the_square_root_of_class_size() -> None:
    from xreport.data import sampler_weights

    labels = torch.tensor([0] * 100 + [1] * 25)
    w = sampler_weights(labels, 2, power=0.5)
    share = float(w[labels == 1].sum() / w.sum())
    assert share == pytest.approx(5 / 15)       # sqrt(25) / (sqrt(100) + sqrt(25))
    assert float(sampler_weights(labels, 2)[labels == 1].sum() / sampler_weights(labels, 2).sum()) == pytest.approx(0.5)
