"""The auto recipe: each rule on its own, and resolve() end to end on tiny data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xreport import config as config_mod
from xreport import recipe
from xreport.data import SourceProbe, probe_source
from xreport.config import DataConfig, RunConfig


def probe(counts: list[int], *, size: int = 28, colour: bool = False, task: str = "binary",
          n_val: int = 100) -> SourceProbe:
    return SourceProbe("medmnist", "x.npz", size, colour, counts, n_val, task)


def write_npz(path: Path, counts: list[int], *, size: int = 28, rgb: bool = False) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, scale in (("train", 1), ("val", 1), ("test", 1)):
        labels = np.concatenate([np.full(c * scale, k) for k, c in enumerate(counts)]).astype(np.uint8)
        shape = (len(labels), size, size, 3) if rgb else (len(labels), size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = labels[:, None]
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------- one rule at a time

@pytest.mark.parametrize(("counts", "expected"), [
    ([100, 120], "none"), ([100, 149], "none"), ([100, 150], "sampler"),
    ([1214, 3494], "sampler"), ([100, 400], "sampler"), ([66, 128, 486], "sqrt_sampler")])
def test_imbalance_follows_the_train_class_ratio(counts: list[int], expected: str) -> None:
    choice = recipe.imbalance_rule(counts)
    assert choice.key == "train.imbalance" and choice.value == expected
    assert "/".join(map(str, counts)) in choice.why


@pytest.mark.parametrize(("task", "metric"), [("binary", "val_auc"), ("multiclass", "val_f1"),
                                              ("ordinal", "val_qwk")])
def test_selection_metric_follows_the_task(task: str, metric: str) -> None:
    assert recipe.select_rule(task).value == metric


def test_flips_only_for_colour_images() -> None:
    assert recipe.flip_rule(colour=False).value == 0.0
    assert recipe.flip_rule(colour=True).value == 0.5


def test_batch_size_leaves_small_sets_enough_steps() -> None:
    assert [recipe.batch_rule(n).value for n in (300, 1080, 4708)] == [32, 64, 128]


def test_small_images_keep_their_native_size_and_get_the_small_stem() -> None:
    p = probe([1000, 1000], size=28)
    choices = {c.key: c.value for c in recipe.choose(p, RunConfig(), set())}
    assert choices["image_size"] == 28 and choices["model.small_input_stem"] == "on"


def test_large_images_go_down_the_ladder_to_fit_the_budget() -> None:
    few = probe([60, 60], size=400, colour=True, n_val=30)
    size, epochs, why = recipe.size_and_epochs(few, arch="resnet18", budget_s=600, size=None,
                                               epochs=None, small_stem="auto")
    assert size == 224 and epochs == recipe.MAX_EPOCHS and "224 px" in why
    many = probe([20_000, 20_000], size=400, colour=True, n_val=2000)
    big_size, big_epochs, _ = recipe.size_and_epochs(many, arch="resnet18", budget_s=600, size=None,
                                                     epochs=None, small_stem="auto")
    assert big_size < size and big_size in recipe.SIZE_LADDER
    # Never upsampled: a 100 px source is trained at 96 px, not 224.
    small = probe([60, 60], size=100, colour=True)
    assert recipe.size_and_epochs(small, arch="resnet18", budget_s=600, size=None, epochs=None,
                                  small_stem="auto")[0] == 96


def test_a_tight_budget_never_drops_to_a_dearer_smaller_size() -> None:
    # 5,708 images at 224 px on one nominal core: no size fits the 9 epochs wanted. Below
    # 96 px the stride-1 stem makes an epoch dearer than at 96 px, so "the smallest size"
    # would be 64 px and a single epoch; the rule keeps the cheapest epoch instead.
    p = probe([1400, 1400, 1500, 1408], size=224, n_val=571)
    one_core = recipe.Throughput(recipe.CPU_TRAIN_FLOPS / 2, "cpu", "nominal", "1 threads")
    size, epochs, _ = recipe.size_and_epochs(p, arch="resnet18", budget_s=600, size=None, epochs=None,
                                             small_stem="auto", throughput=one_core)

    def cost(s: int) -> float:
        return recipe.epoch_cost_s("resnet18", size=s, channels=1, n_train=5708, n_val=571, num_classes=4,
                                   flops_per_s=one_core.flops)

    assert cost(64) > cost(96)                        # the premise: the small stem is dearer
    assert size == min(recipe.SIZE_LADDER, key=cost) and epochs == int(600 // cost(size)) > 1


def test_epochs_scale_with_the_train_split_within_the_budget() -> None:
    def epochs(n: int, budget_s: float = 600) -> int:
        p = probe([n // 2, n - n // 2])
        return recipe.size_and_epochs(p, arch="resnet18", budget_s=budget_s, size=None, epochs=None,
                                      small_stem="auto")[1]

    assert epochs(1000) > epochs(4000) >= recipe.MIN_EPOCHS
    assert epochs(500) == recipe.MAX_EPOCHS
    assert epochs(4000, budget_s=60) < epochs(4000)           # the budget caps the epochs
    cost = recipe.epoch_cost_s("resnet18", size=28, channels=1, n_train=4000, n_val=100,
                               num_classes=2)
    assert epochs(4000, budget_s=60) == int(60 // cost)


def test_ordinal_task_gets_soft_ordinal_labels_and_qwk() -> None:
    choices = {c.key: c.value for c in recipe.choose(probe([50, 20, 10], task="ordinal"), RunConfig(), set())}
    assert choices["model.head"] == "linear" and choices["train.loss"] == "soft_ordinal"
    assert choices["train.select_metric"] == "val_qwk"
    flat = {c.key: c.value for c in recipe.choose(probe([50, 20, 10], task="multiclass"), RunConfig(), set())}
    assert flat["model.head"] == "linear" and flat["train.loss"] == "cross_entropy"
    kept = {c.key for c in recipe.choose(probe([50, 20, 10], task="ordinal"), RunConfig(), {"train.loss"})}
    assert "train.loss" not in kept                     # a loss the user set is never changed


@pytest.mark.parametrize(("names", "graded"), [
    (("0", "1", "2", "3", "4"), True), (("KL0", "KL1", "KL2"), True),
    (("grade_1", "grade_2", "grade_3"), True), (("Stage I", "Stage II", "Stage III"), False),
    (("0", "2", "7"), False), (("glioma", "meningioma", "notumor"), False), (("0", "1"), False),
    # integer names beyond any grading scale's length are class indices
    (tuple(str(i) for i in range(20)), True), (tuple(str(i) for i in range(21)), False),
])
def test_grade_like_class_names_are_said_and_trained_as_grades(names: tuple[str, ...], graded: bool) -> None:
    p = SourceProbe("folder", "d", 28, False, [10] * len(names), 10, "binary" if len(names) == 2
                    else "multiclass", names)
    choices = {c.key: c for c in recipe.choose(p, RunConfig(), set())}
    if not graded:
        assert "data.task" not in choices and choices["train.loss"].value == "cross_entropy"
        return
    said = choices["data.task"]
    assert said.value == "ordinal" and "data.task = 'multiclass'" in said.why
    assert choices["train.loss"].value == "soft_ordinal" and choices["train.select_metric"].value == "val_qwk"
    # The user's data.task wins and nothing is said over it.
    kept = {c.key: c.value for c in recipe.choose(p, RunConfig(), {"data.task"})}
    assert "data.task" not in kept and kept["train.loss"] == "cross_entropy"


def test_budget_follows_the_device_and_says_what_it_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    big = probe([3000, 3000], size=224, colour=False, n_val=600)
    cpu = recipe.Throughput(recipe.CPU_TRAIN_FLOPS, "cpu", "nominal", "2 threads")
    gpu = recipe.Throughput(100 * recipe.CPU_TRAIN_FLOPS, "cuda", "measured", "a GPU")
    s_cpu, e_cpu, why_cpu = recipe.size_and_epochs(big, arch="resnet18", budget_s=600, size=None,
                                                   epochs=None, small_stem="auto", throughput=cpu)
    s_gpu, e_gpu, why_gpu = recipe.size_and_epochs(big, arch="resnet18", budget_s=600, size=None,
                                                   epochs=None, small_stem="auto", throughput=gpu)
    assert (s_gpu, e_gpu) > (s_cpu, e_cpu) and s_gpu == 224
    assert f"{s_cpu} px instead of 224 px" in why_cpu and "cpu (2 threads)" in why_cpu
    assert "cuda (a GPU)" in why_gpu and "the budget cost nothing" in why_gpu
    # choose() sizes for the device the run will use, not for 2 CPU cores whatever the device.
    monkeypatch.setattr(recipe, "device_throughput", lambda config, channels: gpu)
    chosen = {c.key: c.value for c in recipe.choose(big, RunConfig(), set())}
    assert chosen["image_size"] == 224
    assert recipe.measured_flops(__import__("torch").device("cpu"), arch="resnet18", channels=1,
                                 size=32, batch=4, steps=1) > 0


@pytest.mark.parametrize(("n_val", "averaging", "window"), [(78, "ema", 3), (524, "ema", 3), (2000, "none", 1)])
def test_model_choice_follows_the_val_size(n_val: int, averaging: str, window: int) -> None:
    choices = {c.key: c for c in recipe.choose(probe([300, 300], n_val=n_val), RunConfig(), set())}
    assert choices["train.weight_averaging"].value == averaging
    assert choices["train.select_smoothing"].value == window
    assert f"{n_val} val images" in choices["train.weight_averaging"].why


def test_keys_the_user_set_are_never_chosen() -> None:
    given = {"image_size", "train.imbalance", "augment.hflip", "train.lr"}
    keys = {c.key for c in recipe.choose(probe([100, 900]), RunConfig(image_size=40), given)}
    assert not keys & given and "train.epochs" in keys


# ---------------------------------------------------------------- resolve, end to end

def test_resolve_fills_unset_keys_from_the_data(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "someset.npz", [10, 40], size=28)
    raw = {"data": {"dataset": str(path)}, "train": {"lr": 0.01}}
    resolved = recipe.resolve(raw)
    cfg = resolved.config
    assert cfg.image_size == 28 and cfg.train.imbalance == "sampler" and cfg.train.lr == 0.01
    assert cfg.train.select_metric == "val_auc" and cfg.augment.hflip == 0.0
    chosen = {c["key"]: c for c in resolved.choices}
    assert "train.lr" not in chosen and chosen["train.imbalance"]["value"] == "sampler"
    assert all(set(c) == {"key", "value", "rule", "why"} for c in resolved.choices)
    # The written config.toml holds every choice: read back, nothing is left to choose.
    again = recipe.resolve(config_mod.tomllib.loads(config_mod.to_toml(cfg)))
    assert again.config == cfg and again.choices == []


def test_plain_recipe_changes_nothing(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "someset.npz", [10, 40])
    raw = {"data": {"dataset": str(path)}, "train": {"recipe": "plain"}}
    resolved = recipe.resolve(raw)
    assert resolved.choices == [] and resolved.config == config_mod.from_dict(raw)


def test_probe_of_an_image_folder_reads_size_colour_and_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls, n in (("a", 3), ("b", 5)):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    p = probe_source(DataConfig(dataset=str(tmp_path)))
    assert (p.kind, p.native_size, p.colour, p.train_counts, p.n_val, p.task) == \
        ("folder", 60, True, [3, 5], 8, "binary")


def test_probe_of_medmnist_reads_headers_and_the_ordinal_task(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "retinamnist.npz", [6, 3, 2, 2, 1], size=28, rgb=True)
    p = probe_source(DataConfig(dataset=str(path)))
    assert (p.native_size, p.colour, p.train_counts, p.task) == (28, True, [6, 3, 2, 2, 1], "ordinal")


# ---------------------------------------------------------------- through the CLI

TINY = '''name = "auto"
[data]
dataset = "phantom"
phantom_size = 16
phantom_train = 16
phantom_val = 8
phantom_test = 4
[train]
num_threads = 1
precision = "fp32"
max_steps = 1
'''


@pytest.mark.parametrize("flag", ["auto", "plain"])
def test_cli_writes_what_the_recipe_chose(tmp_path: Path, flag: str) -> None:
    from xreport import runs
    from xreport.cli import main

    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    assert main(["train", "--config", str(path), "--recipe", flag, "--epochs", "1",
                 "--checkpoints", str(tmp_path / "ck")]) == 0
    paths = runs.RunPaths("auto", checkpoints_root=tmp_path / "ck")
    meta = runs.load_checkpoint(paths.best).meta
    saved = config_mod.load(paths.config)
    assert meta["recipe"]["name"] == flag and saved.train.epochs == 1
    chosen = {c["key"]: c["value"] for c in meta["recipe"]["choices"]}
    if flag == "plain":
        assert chosen == {} and saved.image_size == RunConfig().image_size
        return
    # phantom: 16 px grey, balanced binary -> native size, small stem, no rebalancing, AUC
    assert chosen["image_size"] == 16 == saved.image_size and "train.epochs" not in chosen
    assert chosen["train.imbalance"] == "none" and chosen["train.select_metric"] == "val_auc"
    assert saved.augment.hflip == 0.0 and saved.train.label_smoothing == recipe.BASE["train.label_smoothing"]


def test_probe_passes_over_unreadable_images(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        folder = tmp_path / "train" / cls
        folder.mkdir(parents=True)
        Image.fromarray(np.zeros((30, 30), dtype=np.uint8)).save(folder / "0.png")
    (tmp_path / "train" / "a" / "1.png").write_text("not an image")
    p = probe_source(DataConfig(dataset=str(tmp_path)))
    assert p.native_size == 30 and p.train_counts == [2, 1]


def test_data_the_probe_cannot_read_is_left_to_the_loader(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "oneclass.npz", [12])
    resolved = recipe.resolve({"data": {"dataset": str(path)}})
    assert resolved.choices == [] and resolved.probe is None
