"""`xreport import`: a torchvision state_dict trained elsewhere becomes a run folder."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from xreport import artifacts, build, runs

from cli_run import error_line, run_cli

CONFIG = """image_size = 32
[data]
dataset = "phantom"
phantom_size = 32
phantom_train = 24
phantom_val = 12
phantom_test = 16
[preprocess]
normalize = "imagenet"
"""


class NotATensor:
    """Anything a pickle can carry besides tensors; weights_only must refuse it."""




@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("import")
    (root / "data.toml").write_text(CONFIG, encoding="utf-8")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2)          # trained "elsewhere"
    state = model.state_dict()
    # A training script's checkpoint: DDP's prefix, wrapped with other (plain) entries.
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}, root / "ddp.pt")
    torch.save(state, root / "bare.pt")
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), root / "five.pt")
    torch.save(torchvision.models.resnet34(num_classes=2).state_dict(), root / "r34.pt")
    torch.save({"state_dict": state, "extra": NotATensor()}, root / "pickled.pt")
    data = (root / "bare.pt").read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    return root


def test_import_writes_a_complete_run_folder_build_reads(work: Path) -> None:
    proc = run_cli("import", "--weights", "ddp.pt", "--arch", "resnet18", "--name", "elsewhere",
                   "--config", "data.toml", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "imported elsewhere: resnet18, 2 classes" in proc.stdout and "standard stem" in proc.stdout
    paths = runs.RunPaths("elsewhere", checkpoints_root=work / "checkpoints", reports_root=work / "reports")
    assert paths.config.is_file() and paths.class_distribution.is_file() and not paths.history.exists()
    assert not paths.last.exists()
    ckpt = runs.load_checkpoint(paths.best)
    meta = artifacts.check_checkpoint_meta(ckpt.meta, path=paths.best)
    assert meta["imported"] == {"file": "ddp.pt", "sha256": hashlib.sha256((work / "ddp.pt").read_bytes()).hexdigest(),
                                "bytes": (work / "ddp.pt").stat().st_size}
    assert meta["arch"] == "resnet18" and meta["in_channels"] == 3 and not meta["small_input_stem"]
    assert meta["epoch"] is None and meta["loss"] == "imported" and meta["num_classes"] == 2
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])     # [preprocess] from the config
    assert "small_input_stem = \"off\"" in paths.config.read_text()  # the stem as the weights have it
    # The weights are the file's, unchanged.
    bare = torch.load(work / "bare.pt", weights_only=True)
    assert set(ckpt.state_dict) == set(bare)
    assert all(torch.equal(ckpt.state_dict[k], bare[k]) for k in bare)
    # evaluate reads the folder like a trained run's; the report says where the model came from.
    proc = run_cli("evaluate", "--run", "elsewhere", "--no-cam", cwd=work)
    assert proc.returncode == 0, proc.stderr
    from xreport import render

    ctx = build.report_context(paths, langs=["en", "zh-TW"])
    assert ctx["training"]["imported"]["sha256"] == meta["imported"]["sha256"]
    assert ctx["training"]["figures"]["curves"] is None and ctx["model"]["imported"]
    html = render.render_html(ctx, langs=["en", "zh-TW"])
    assert meta["imported"]["sha256"] in html and "ddp.pt" in html
    assert "trained elsewhere and imported" in html and "於他處訓練" in html
    assert "trained from scratch" not in html
    # A second import of the same name is refused; the first run stays as it was.
    before = paths.best.read_bytes()
    line = error_line(run_cli("import", "--weights", "bare.pt", "--arch", "resnet18", "--name", "elsewhere",
                              "--config", "data.toml", cwd=work))
    assert "already exists" in line and "elsewhere" in line
    assert paths.best.read_bytes() == before


@pytest.mark.parametrize(("file", "arch", "expected"), [
    ("five.pt", "resnet18", ["five.pt", "fc.weight", "(5, 512)", "(2, 512)", "2 classes"]),
    ("r34.pt", "resnet18", ["r34.pt", "unexpected", "layer1.2."]),
    ("bare.pt", "densenet121", ["bare.pt", "features.conv0.weight"]),
    ("pickled.pt", "resnet18", ["pickled.pt", "refused", "other than tensors"]),
    ("truncated.pt", "resnet18", ["truncated.pt", "truncated"]),
    ("missing.pt", "resnet18", ["missing.pt", "no such file"]),
])
def test_bad_weights_are_one_line_and_write_nothing(work: Path, file: str, arch: str, expected: list[str]) -> None:
    name = f"bad-{Path(file).stem}"
    line = error_line(run_cli("import", "--weights", file, "--arch", arch, "--name", name,
                              "--config", "data.toml", cwd=work))
    for part in expected:
        assert part in line, line
    assert not (work / "checkpoints" / name).exists()
    assert not [p for p in (work / "checkpoints").glob(f".{name}*")] if (work / "checkpoints").exists() else True
