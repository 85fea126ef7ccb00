"""Worked example of docs/HOWTO-extend.md: a CAM method is one class and one registration line.

The toy method lives in this file only. Registered, it is a ``--cam`` choice of the CLI, it
passes every option check (evaluate.check_report_options, compute_cams, viewer_maps,
explain_split) and an ``xreport evaluate`` run writes its maps and statistics; no module of
xreport is edited. The display name falls back to the method's name without a catalog entry;
xreport's own methods each have one in every language.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from test_reliability_inputs import cli, one_error
from xreport import explain, languages
from xreport.evaluate import check_report_options
from xreport.errors import ConfigError
from xreport.explain import CamBatch, CamMethod, register_cam_method
from xreport.explain import methods as cam_registry

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoints" / "fixture_binary"
TEMPLATES = Path(__file__).parents[1] / "templates"


class ActivationMean(CamMethod):
    """Every channel weighs the same: the map is the mean activation (no class, no gradient)."""

    name = "activation-mean"

    def weights(self, batch: CamBatch, targets: Tensor, grads: Tensor | None) -> Tensor:
        b, c = batch.acts.shape[:2]
        return torch.full((b, c), 1.0 / c, device=batch.acts.device)


@pytest.fixture()
def registered(monkeypatch: pytest.MonkeyPatch) -> str:
    # A private copy of the registry, so the toy method leaves with this test.
    monkeypatch.setattr(cam_registry, "_REGISTRY", dict(cam_registry._REGISTRY))
    register_cam_method(ActivationMean)   # the one line that adds a method
    return ActivationMean.name


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_an_unregistered_method_is_refused_everywhere() -> None:
    with pytest.raises(ConfigError, match="activation-mean"):
        check_report_options(cam_method="activation-mean")
    with pytest.raises(ConfigError, match="not one of"):
        explain.cam_method("activation-mean")


def test_a_registered_method_is_a_choice_and_computes_its_maps(registered: str,
                                                             capsys: pytest.CaptureFixture) -> None:
    assert registered in explain.cam_methods() and registered not in explain.gradient_methods()
    rc, help_text, _ = cli(capsys, "evaluate", "--help")
    assert rc == 0 and registered in help_text
    check_report_options(cam_method=registered)

    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.rand(3, 1, 8, 8)
    cams = explain.compute_cams(model, x, target_layer=model.features, targets=torch.tensor([0, 1, 0]),
                                method=registered)
    with torch.no_grad():
        expected = model.features(x).mean(1)   # uniform weights: the channel mean
    lo = expected.amin(dim=(1, 2), keepdim=True)
    expected = (expected - lo) / (expected.amax(dim=(1, 2), keepdim=True) - lo)
    torch.testing.assert_close(cams, expected)   # 8x8 grid at 8x8 input: no resize
    # Class-agnostic, so the viewer's per-class maps are the same map for both classes.
    grid = explain.viewer_maps(model, x, target_layer=model.features, method=registered)
    assert grid.shape == (3, 2, 8, 8) and torch.equal(grid[:, 0], grid[:, 1])


def test_a_taken_or_empty_name_is_refused(registered: str) -> None:
    class Impostor(ActivationMean):
        name = "gradcam"

    class Nameless(CamMethod):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_cam_method(Impostor)
    with pytest.raises(ValueError, match="non-empty"):
        register_cam_method(Nameless)
    register_cam_method(ActivationMean)   # the same class again: no change
    assert explain.cam_methods().count(registered) == 1
    assert type(explain.cam_method("gradcam")).__name__ == "GradCAM"


def test_a_registered_method_runs_through_the_whole_explanation(registered: str) -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.rand(6, 1, 8, 8)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1).numpy()
    masks = torch.zeros(6, 8, 8, dtype=torch.bool)
    masks[:, :4, :4] = True
    summary, maps = explain.explain_split(
        model, x, y_true=y.numpy(), probs=probs, class_names=["a", "b"], target_layer=model.features,
        layer_name="features", method=registered, masks=masks, faithfulness_n=6, sanity_n=3,
        faithfulness_steps=3, random_per_image=1, sanity_seeds=1)
    assert summary["method"] == registered
    assert maps.shape[0] == sum(len(g["maps"]) for g in summary["gallery"]) > 0
    assert summary["faithfulness"]["n"] == 6 and summary["sanity"]["stages"]
    assert summary["localisation"] is not None and summary["localisation"]["n"] == 6


def test_the_cli_names_a_registered_method_among_the_choices(registered: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "checkpoints" / "fx"
    shutil.copytree(FIXTURE, run)
    rc, _, err = cli(capsys, "evaluate", "--run", str(run), "--device", "cpu",
                     "--reports", str(tmp_path / "reports"), "--cam", "activation-median")
    one_error(rc, err, "--cam", "activation-median", registered)
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow  # a whole evaluation with its explanation checks: about a minute on 2 CPU cores
def test_a_registered_method_runs_through_xreport_evaluate(registered: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "checkpoints" / "fx"
    shutil.copytree(FIXTURE, run)
    rc, _, err = cli(capsys, "evaluate", "--run", str(run), "--device", "cpu",
                     "--reports", str(tmp_path / "reports"), "--cam", registered)
    assert rc == 0, err
    metrics = json.loads((tmp_path / "reports" / "fx" / "metrics.json").read_text(encoding="utf-8"))
    summary = metrics["explain"]
    assert summary["method"] == registered
    assert summary["gallery"] and summary["faithfulness"]["verdict"] and summary["sanity"]["stages"]
    viewer = json.loads((tmp_path / "reports" / "fx" / "viewer.json").read_text(encoding="utf-8"))
    assert viewer["method"] == registered


def test_every_builtin_method_has_a_display_name_in_every_language() -> None:
    own = [name for name in explain.cam_methods()
           if type(explain.cam_method(name)).__module__.startswith("xreport.")]
    assert len(own) >= 8
    for code in languages.codes():
        catalog = json.loads((TEMPLATES / "i18n" / code / "report.json").read_text(encoding="utf-8"))
        missing = [name for name in own if f"cam.{name}" not in catalog]
        assert not missing, (code, missing)


def test_the_readme_lists_the_builtin_methods() -> None:
    """README cannot read the registry, so it is checked against it."""
    import re

    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    found = re.search(r"`--cam METHOD` \(([^)]*)\)", text)
    assert found, "README lost its --cam METHOD list"
    listed = [m.strip() for m in " ".join(found.group(1).split()).split(",")]
    own = [name for name in explain.cam_methods()
           if type(explain.cam_method(name)).__module__.startswith("xreport.")]
    assert listed == own
