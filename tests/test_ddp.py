"""`xreport train` under torchrun: 2 processes, gloo on CPU, tiny phantom data."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from xreport import runs
from xreport.evaluate import load_run

CONFIG = """\
name = "ddp"
image_size = 32

[data]
dataset = "phantom"
phantom_size = 32
phantom_train = 64
phantom_val = 30
phantom_test = 16

[model]
small_input_stem = "off"

[train]
epochs = 1
batch_size = 16
device = "cpu"
"""

EPOCH_LINE = re.compile(r"epoch 1/1 .*\| lr")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_train_runs_under_torchrun_with_two_processes(tmp_path: Path) -> None:
    (tmp_path / "ddp.toml").write_text(CONFIG)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "xreport", "train", "--config", "ddp.toml", "--checkpoints", "ck"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]

    paths = runs.RunPaths("ddp", checkpoints_root=tmp_path / "ck")
    for f in (paths.config, paths.best, paths.last, paths.history, paths.train_log,
              paths.class_distribution):
        assert f.is_file(), f"{f.name} missing; output:\n{output[-2000:]}"
    # Only rank 0 writes: no stray temporary files from a second writer.
    assert sorted(p.name for p in paths.run_dir.iterdir() if not p.name.startswith(".")) == sorted(
        f.name for f in (paths.config, paths.best, paths.last, paths.history, paths.train_log,
                         paths.class_distribution))
    assert paths.train_log.read_text().count("epoch 1/1") == 1

    ckpt = runs.load_checkpoint(paths.best)
    assert ckpt.meta["world_size"] == 2
    assert ckpt.meta["epoch"] == 1
    # 64 images sharded over 2 ranks in batches of 16: 2 steps a rank.
    assert runs.load_checkpoint(paths.last).extra["global_step"] == 2
    run = load_run(paths, device=torch.device("cpu"))
    assert run.meta["image_size"] == 32 and not run.meta["small_input_stem"]

    # Metrics are reduced across ranks: both ranks log the very same epoch summary.
    lines = [m.group(0) for m in EPOCH_LINE.finditer(output)]
    assert len(lines) == 2, output[-2000:]
    assert lines[0] == lines[1]
    history = paths.history.read_text().splitlines()
    assert len(history) == 2 and history[0].startswith("epoch,")
