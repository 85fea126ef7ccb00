"""`xreport train --seeds`: one complete run per seed, and the helpers a study of them uses."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from xreport import artifacts, runs
from xreport.errors import ConfigError, RunError
from xreport.metrics import seed_summary
from xreport.train import _seed_command

from cli_run import error_line, run_cli

CONFIG = """name = "sd"
image_size = 32
[data]
dataset = "phantom"
phantom_size = 32
phantom_train = 24
phantom_val = 12
phantom_test = 8
[model]
arch = "resnet_tiny"
[train]
epochs = 1
batch_size = 12
recipe = "plain"
"""




def test_seed_run_names_are_the_study_runs() -> None:
    assert runs.seed_run_names("chest", [0, 1, 2]) == ["chest-s0", "chest-s1", "chest-s2"]
    for bad in ([], [0, 1, 0], [-1], [True]):
        with pytest.raises(ConfigError):
            runs.seed_run_names("chest", bad)


def test_seed_summary_is_mean_sample_sd_min_max() -> None:
    out = seed_summary([0.9, {"value": 0.8, "ci95": [0.7, 0.9]}, 0.7, None, float("nan"), {"value": None}])
    assert out["n"] == 3 and out["min"] == 0.7 and out["max"] == 0.9
    assert math.isclose(out["mean"], 0.8) and math.isclose(out["sd"], 0.1)   # n - 1 in the sd
    assert seed_summary([0.5]) == {"n": 1, "mean": 0.5, "sd": None, "min": 0.5, "max": 0.5}
    assert seed_summary([]) == {"n": 0, "mean": None, "sd": None, "min": None, "max": None}


def test_each_seed_run_records_the_command_that_trains_it_alone() -> None:
    base = ["xreport", "train", "--config", "c.toml", "--name", "sd", "--seeds", "0", "1", "--epochs", "2"]
    assert _seed_command(base, name="sd-s1", seed=1) == [
        "xreport", "train", "--config", "c.toml", "--epochs", "2", "--name", "sd-s1", "--seed", "1"]


def test_train_seeds_makes_one_reproducible_run_per_seed(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(CONFIG, encoding="utf-8")
    proc = run_cli("train", "--config", "c.toml", "--seeds", "3", "5", "--max-steps", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "xreport build --runs sd-s3 sd-s5" in proc.stdout
    metas = {}
    for seed in (3, 5):
        paths = runs.RunPaths(f"sd-s{seed}", checkpoints_root=tmp_path / "checkpoints")
        for f in (paths.config, paths.best, paths.last, paths.history, paths.class_distribution):
            assert f.is_file(), f
        assert f"seed = {seed}" in paths.config.read_text() and f'name = "sd-s{seed}"' in paths.config.read_text()
        metas[seed] = runs.load_checkpoint(paths.best)
        assert artifacts.load_checkpoint_meta(paths.best)["seed"] == seed
        assert metas[seed].meta["command"][-4:] == ["--name", f"sd-s{seed}", "--seed", str(seed)]
    assert not torch.equal(metas[3].state_dict["fc.weight"], metas[5].state_dict["fc.weight"])
    # A seed's run repeats on its own, from its own folder's config.
    again = run_cli("train", "--config", "checkpoints/sd-s5/config.toml", "--name", "alone",
                    "--max-steps", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    alone = runs.load_checkpoint(tmp_path / "checkpoints" / "alone" / "best.pt")
    assert all(torch.equal(alone.state_dict[k], metas[5].state_dict[k]) for k in alone.state_dict)
    # Any seed whose run exists already: refused before the first run starts.
    line = error_line(run_cli("train", "--config", "c.toml", "--seeds", "4", "5", "--max-steps", "1", cwd=tmp_path))
    assert "sd-s5" in line and "already exists" in line
    assert not (tmp_path / "checkpoints" / "sd-s4").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--seeds", "1", "2", "1"], "seed 1 twice"),
    (["--seeds", "0", "1", "--resume"], "--resume"),
    (["--seeds", "0", "--seed", "4"], "--seed and --seeds"),
])
def test_bad_seed_lists_are_one_line_and_write_nothing(tmp_path: Path, args: list[str], expected: str) -> None:
    (tmp_path / "c.toml").write_text(CONFIG, encoding="utf-8")
    line = error_line(run_cli("train", "--config", "c.toml", *args, cwd=tmp_path))
    assert expected in line
    assert not (tmp_path / "checkpoints").exists()
