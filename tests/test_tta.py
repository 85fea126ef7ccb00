"""Test-time augmentation: the views a run's own training augmentation declares valid,
averaged in one forward pass per batch, recorded in metrics.json and stated in the report."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_run import error_line, run_cli
from report_fixture import make_run, shared_run
from xreport import api, artifacts, render, report, runs
from xreport.config import AugmentConfig
from xreport.data import normalize_batch
from xreport.data.augment import VIEW_NAMES, apply_views, tta_views
from xreport.errors import ConfigError, ReportError
from xreport.evaluate import (NO_TTA, cached_metrics, check_report_options, dataset_for_run, evaluate_run,
                              load_run, predict, views_for)

GREY_NO_FLIP = AugmentConfig(hflip=0.0, vflip=0.0, rotation=10.0)
COLOUR_HFLIP = AugmentConfig(hflip=0.5, vflip=0.0, rotation=10.0)
DIHEDRAL = AugmentConfig(hflip=0.5, vflip=0.5, rotation=180.0)


# ---------------------------------------------------------------- which views

def test_views_follow_the_training_augmentation() -> None:
    assert tta_views(GREY_NO_FLIP) == ("identity",)
    assert tta_views(COLOUR_HFLIP) == ("identity", "hflip")
    assert tta_views(DIHEDRAL) == VIEW_NAMES and len(VIEW_NAMES) == 8
    # Two flips compose to a half turn; quarter turns alone are the rotation group.
    assert tta_views(AugmentConfig(hflip=0.5, vflip=0.5, rotation=0)) == ("identity", "hflip", "vflip", "rot180")
    assert tta_views(AugmentConfig(hflip=0, rotation=90)) == ("identity", "rot90", "rot180", "rot270")
    # A rotation below a quarter turn is no exact view; nor is any view that swaps H and W
    # of a non-square input.
    assert tta_views(AugmentConfig(hflip=0, rotation=89)) == ("identity",)
    assert tta_views(DIHEDRAL, square=False) == ("identity", "hflip", "vflip", "rot180")


def test_apply_views_stacks_each_exact_view_view_major() -> None:
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    out = apply_views(x, VIEW_NAMES)
    assert out.shape == (16, 1, 3, 3)
    views = out.view(8, 2, 1, 3, 3)
    assert torch.equal(views[0], x)
    assert torch.equal(views[1], x.flip(-1))
    assert torch.equal(views[2], x.flip(-2))
    assert torch.equal(views[4], x.flip(-1).flip(-2))
    assert torch.equal(views[6], x.transpose(-2, -1))
    # The 8 views of an image whose pixels all differ are 8 different images.
    assert len({tuple(v[0].flatten().tolist()) for v in views}) == 8


# ---------------------------------------------------------------- predict

class _Net(torch.nn.Module):
    """A tiny position-sensitive classifier; ``symmetric`` averages its logits over the 8
    dihedral views of its input, so its output is invariant under every view by construction."""

    def __init__(self, symmetric: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(8 * 8, 3)
        self.symmetric = symmetric
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        if self.symmetric:
            n = x.shape[0]
            return self.linear(apply_views(x, VIEW_NAMES).flatten(1)).view(8, n, -1).mean(0)
        return self.linear(x.flatten(1))


def _images(n: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)


def _predict(model: torch.nn.Module, images: torch.Tensor, **kw: object) -> np.ndarray:
    return predict(model, images, mean=[0.5], std=[0.25], device=torch.device("cpu"), progress=False, **kw)


@torch.no_grad()
def test_without_tta_the_probabilities_are_todays_exactly() -> None:
    model, images = _Net(), _images()
    expected = torch.cat([model(normalize_batch(images[i:i + 4], [0.5], [0.25])).float().softmax(1)
                          for i in range(0, len(images), 4)]).double().numpy()
    got = _predict(model, images, batch_size=4, views=NO_TTA)
    assert np.array_equal(got, expected)


@torch.no_grad()
def test_tta_averages_the_softmax_of_every_view_in_one_forward_per_batch() -> None:
    model, images = _Net(), _images(10)
    x = normalize_batch(images, [0.5], [0.25])
    expected = torch.stack([model(apply_views(x, (v,))).softmax(1) for v in VIEW_NAMES]).mean(0)
    model.batch_sizes.clear()
    got = _predict(model, images, batch_size=16, views=VIEW_NAMES)
    np.testing.assert_allclose(got, expected.double().numpy(), rtol=1e-5, atol=1e-6)
    # 16 inputs a pass = 2 images x 8 views: 5 passes for 10 images, never over the batch size.
    assert model.batch_sizes == [16] * 5
    # A different model's probabilities move: the views are really applied.
    assert not np.allclose(got, _predict(model, images, batch_size=16, views=NO_TTA), atol=1e-4)


def test_a_model_invariant_under_the_views_gives_the_same_predictions() -> None:
    model, images = _Net(symmetric=True), _images()
    plain = _predict(model, images, views=NO_TTA)
    for views in (tta_views(COLOUR_HFLIP), tta_views(DIHEDRAL)):
        np.testing.assert_allclose(_predict(model, images, views=views), plain, rtol=1e-5, atol=1e-6)


def test_views_must_start_with_the_image_itself() -> None:
    with pytest.raises(ConfigError, match="identity"):
        _predict(_Net(), _images(), views=("hflip",))


# ---------------------------------------------------------------- evaluate, metrics.json, cache

def _with_augment(paths: runs.RunPaths, augment: AugmentConfig) -> None:
    """Rewrite the fixture's best.pt as a run trained with ``augment``."""
    ckpt = runs.load_checkpoint(paths.best)
    meta = copy.deepcopy(ckpt.meta)
    meta["config"]["augment"] = dataclasses.asdict(augment)
    runs.save_checkpoint(paths.best, state_dict=ckpt.state_dict, meta=meta)


def _evaluate(paths: runs.RunPaths, tta: str) -> artifacts.Evaluation:
    return evaluate_run(paths, split="test", tta=tta, explain=False, n_boot=20, progress=False)


def test_metrics_json_records_the_views_and_the_cache_follows_the_option(tmp_path: Path) -> None:
    paths = make_run(tmp_path, n_test=40)
    _with_augment(paths, COLOUR_HFLIP)
    off = _evaluate(paths, "off")
    assert off["tta"] is False and off["tta_views"] == ["identity"]
    off_probs = artifacts.load_predictions(paths, class_names=off["class_names"]).probs

    run = load_run(paths, device=torch.device("cpu"))
    dataset = dataset_for_run(run, splits=("test", "val"))
    out = paths.evaluation("test")
    fresh = dict(cam_method=None, split="test", need_explain=False)
    assert cached_metrics(out, run, dataset, tta="off", **fresh) is not None
    assert cached_metrics(out, run, dataset, tta="on", **fresh) is None     # the option changed
    assert cached_metrics(out, run, dataset, tta=None, **fresh) is not None

    on = _evaluate(paths, "on")
    assert on["tta"] is True and on["tta_views"] == ["identity", "hflip"]
    loaded = artifacts.load_evaluation(paths)
    assert loaded["tta_views"] == ["identity", "hflip"]
    on_probs = artifacts.load_predictions(paths, class_names=on["class_names"]).probs
    assert not np.allclose(on_probs, off_probs, atol=1e-6)
    assert cached_metrics(out, run, dataset, tta="on", **fresh) is not None
    assert cached_metrics(out, run, dataset, tta="off", **fresh) is None


def test_a_run_trained_without_flips_gets_the_image_alone(tmp_path: Path) -> None:
    paths = make_run(tmp_path, n_test=40)
    _with_augment(paths, GREY_NO_FLIP)
    off_probs = artifacts.load_predictions(paths, class_names=_evaluate(paths, "off")["class_names"]).probs
    on = _evaluate(paths, "on")
    assert on["tta_views"] == ["identity"]
    assert np.array_equal(artifacts.load_predictions(paths, class_names=on["class_names"]).probs, off_probs)
    assert report._results(on["metrics"], "test", {}, evaluation=on)["tta_views"] is None


def test_imported_weights_get_the_image_alone(tmp_path: Path) -> None:
    """How weights trained elsewhere were augmented is unknown: no view is known to be valid."""
    paths = make_run(tmp_path, n_test=40)
    _with_augment(paths, DIHEDRAL)
    shape = (1, 1, 32, 32)
    assert views_for(load_run(paths, device=torch.device("cpu")), "on", image_shape=shape) == VIEW_NAMES
    ckpt = runs.load_checkpoint(paths.best)
    meta = {**ckpt.meta, "imported": {"file": "weights.pt", "sha256": "ab" * 32, "bytes": 1}}
    runs.save_checkpoint(paths.best, state_dict=ckpt.state_dict, meta=meta)
    assert views_for(load_run(paths, device=torch.device("cpu")), "on", image_shape=shape) == ("identity",)


def test_older_files_load_and_writers_check_the_views(tmp_path: Path) -> None:
    paths = make_run(tmp_path, n_test=40)
    old = artifacts.load_evaluation(paths)          # the fixture's file has no tta_views
    assert "tta_views" not in old and artifacts.tta_views_of(old) == ["identity"]
    assert artifacts.tta_views_of({**old, "tta": True}) == ["identity", "hflip"]   # what --tta did then
    for bad, tta in ((["hflip"], True), (["identity", "identity"], True), (["identity", "hflip"], False)):
        with pytest.raises(ReportError, match="tta_views"):
            artifacts.save_evaluation(paths, {**old, "tta": tta, "tta_views": bad})
    with pytest.raises(ReportError, match="tta_views"):
        artifacts.save_evaluation(paths, {**old, "tta": True, "tta_views": ["identity", "mirror"]})


def test_the_option_is_checked_before_anything_is_written() -> None:
    check_report_options(tta="on")
    with pytest.raises(ConfigError, match="--tta 'yes'"):
        check_report_options(tta="yes")


def test_the_cli_takes_on_off_and_refuses_it_for_a_study(tmp_path: Path) -> None:
    proc = run_cli("evaluate", "--run", "x", "--tta", "maybe", cwd=tmp_path)
    assert proc.returncode == 2 and "--tta: invalid choice: 'maybe'" in proc.stderr
    line = error_line(run_cli("build", "--runs", "a", "b", "--tta", "on", cwd=tmp_path))
    assert "--tta on is for a single run" in line
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="tta= is for a single run"):
        api.build(runs=["a", "b"], tta=True, checkpoints=tmp_path / "c", reports=tmp_path / "r")


# ---------------------------------------------------------------- the report

def test_the_report_says_which_views_are_averaged_only_when_there_are_several() -> None:
    _, ctx = shared_run()
    assert ctx["results"]["tta_views"] is None        # the fixture's metrics.json: no TTA
    html = render.render_html(ctx, langs=["en", "zh-TW"])
    assert "results-tta" not in html and "views of the image" not in html

    with_tta = copy.deepcopy(ctx)
    with_tta["results"]["tta_views"] = ["identity", "hflip", "vflip", "rot180"]
    html = render.render_html(with_tta, langs=["en", "zh-TW"])
    assert 'id="en-results-tta"' in html and 'id="zh-TW-results-tta"' in html
    assert ("over 4 views of the image (the image itself, mirrored left to right, mirrored top to "
            "bottom, turned 180°)") in html
    assert "4 個視角（原影像、左右翻轉、上下翻轉、旋轉 180°）" in html


def test_the_results_context_reads_the_recorded_views() -> None:
    paths, _ = shared_run()
    evaluation = artifacts.load_evaluation(paths)
    on = {**evaluation, "tta": True, "tta_views": ["identity", "hflip"]}
    assert report._results(on["metrics"], "test", {}, evaluation=on)["tta_views"] == ["identity", "hflip"]
    off = {**evaluation, "tta": False, "tta_views": ["identity"]}
    assert report._results(off["metrics"], "test", {}, evaluation=off)["tta_views"] is None
