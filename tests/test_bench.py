"""Each speed benchmark runs end to end in --smoke mode (random images, a step or two) and
writes a result JSON with the machine, the command, load averages and its figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_smoke(script: str, out: Path) -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    assert result["machine"]["nproc"] >= 1 and result["machine"]["torch"]
    assert f"bench/{script} --smoke" in result["command"]
    assert len(result["load_average_start"]) == 3 and len(result["load_average_end"]) == 3
    return result


def test_train_speed_smoke(tmp_path: Path) -> None:
    result = run_smoke("train_speed.py", tmp_path / "train.json")
    rates = result["images_per_s"]
    for variant in ("pil_w0", "pil_w2", "memory_fp32", "memory_bf16cl", "xreport_fp32", "xreport_auto"):
        entry = rates[f"standard/{variant}"]
        assert entry["best_per_s"] > 0
        assert entry["rounds"][0]["items"] == result["setup"]["batch_size"] * result["setup"]["steps"]
        assert len(entry["rounds"][0]["load_before"]) == 3
    assert set(result["ratios"]["standard"]["targets"]) == {
        "xreport_auto >= 2x best PIL loop", "xreport_auto >= memory_fp32"}
    assert result["setup"]["xreport_resolved"]["standard/xreport_fp32"]["precision"] == "fp32"


def test_cam_speed_smoke_interleaves_thread_counts_at_one_batch_size(tmp_path: Path) -> None:
    result = run_smoke("cam_speed.py", tmp_path / "cam.json")
    assert result["threads"] == [1, 2] and result["batch_size"] == 2
    assert set(result["variants"]) == {f"{v}@{t}" for t in (1, 2) for v in
                                       ("grad_cam_per_image", "grad_cam_batched_2", "xreport_batched_2")}
    for t in (1, 2):
        for other in (f"grad_cam_per_image@{t}", f"grad_cam_batched_2@{t}"):
            r = result["ratios"][f"xreport_batched_2@{t} / {other}"]
            assert r["min"] <= r["median"] <= r["max"] and len(r["per_round"]) == 1
    assert set(result["cpu"]["flags"]) >= {"avx512_bf16", "amx_bf16"}
    assert result["max_abs_diff_vs_grad_cam"] < 1e-4
    # Every method the library has, each timed per image against it; the maps agree (EigenCAM's
    # sign is oriented by xreport, the library leaves the SVD's).
    methods = result["methods"]
    assert set(methods) == {"gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam", "scorecam"}
    for name, m in methods.items():
        assert m["ratio_xreport_over_library_per_image"]["median"] > 0
        if name != "eigencam":
            assert m["max_abs_diff"] < 1e-4, (name, m["max_abs_diff"])


def test_eval_speed_smoke(tmp_path: Path) -> None:
    result = run_smoke("eval_speed.py", tmp_path / "eval.json")
    n = result["setup"]["images"]
    for variant in ("loader_pil", "loader_tensor", "xreport"):
        assert result["images_per_s"][f"standard/{variant}"]["rounds"][0]["items"] == n
    whole = result["xreport_evaluate_no_cam"]
    assert whole["best_images_per_s"] > 0
    assert {"load", "predict", "metrics"} <= set(whole["rounds"][0]["timings"])


@pytest.mark.slow
def test_build_scale_smoke(tmp_path: Path) -> None:
    result = run_smoke("build_scale.py", tmp_path / "scale.json")
    build = result["build_test_split"]
    assert build["best_seconds"]["cold"] > 0 and build["best_seconds"]["cached"] > 0
    scale = result["evaluate_scale"]
    assert scale["sizes"] == [40, 80]
    assert all(v > 0 for v in scale["peak_rss_mib"].values())
    assert set(scale["linear_fit"]) == {"fixed_s", "per_1000_images_s", "max_relative_residual"}


@pytest.mark.slow
def test_build_growth_smoke(tmp_path: Path) -> None:
    result = run_smoke("build_growth.py", tmp_path / "growth.json")
    runs = result["runs"]
    assert [(r["size"], r["images"]) for r in runs] == [(24, 16), (24, 24), (32, 16), (32, 24)]
    for r in runs:
        assert r["seconds"] > 0 and r["peak_rss_mb"] > 0 and r["protocol"] == "full"
        assert {"gallery_s", "faithfulness_s", "sanity_s", "viewer_s"} <= set(r["explain_timings"])
        assert {"predict", "explain", "build_figures", "build_html"} <= set(r["timings"])
        assert len(r["load_before"]) == 3
    assert set(result["cpu"]["flags"]) >= {"avx512_bf16", "amx_bf16"}
    for row in result["imputation"]:
        assert set(row["solvers"]) == {"xreport_multigrid", "previous_cg", "reference_spsolve"}
        assert row["max_abs_diff_vs_reference"]["xreport_multigrid"] < 5e-3


def _bench_module(name: str):  # noqa: ANN202
    sys.path.insert(0, str(REPO / "bench"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(REPO / "bench"))


def test_each_ablation_variant_changes_exactly_what_it_names() -> None:
    from xreport import config as config_mod
    from xreport.config import dotted_items, to_dict  # the dotted-key view resume compares recipes by

    ablation = _bench_module("ablation")
    flat = lambda cfg: dotted_items(to_dict(cfg))  # noqa: E731
    recipe = flat(config_mod.load(ablation.RECIPE))
    for name, (change, overrides) in ablation.VARIANTS.items():
        variant = flat(config_mod.load(ablation.RECIPE, overrides=overrides))
        changed = {k for k in recipe if recipe[k] != variant[k]}
        assert changed == set(overrides), (name, changed)
        assert change


def test_quality_results_hold_what_the_issue_asks_for_each_recipe() -> None:
    quality = json.loads((REPO / "bench" / "results" / "quality.json").read_text())
    assert quality["machine"]["cores"] >= 1
    for name, entry in quality["recipes"].items():
        assert (REPO / entry["recipe"]).exists(), name
        seeds = entry["per_seed"]
        assert [s["seed"] for s in seeds] == entry["seeds"]
        for metric in ("acc", "auc"):
            values = [s[f"test_{metric}"] for s in seeds]
            assert 0.5 < entry[f"test_{metric}_mean"] <= 1
            assert abs(entry[f"test_{metric}_mean"] - sum(values) / len(values)) < 1e-3, name
            assert entry[f"test_{metric}_std"] >= 0
        assert entry["minutes_per_seed"] > 0


def test_zoo_smoke(tmp_path: Path) -> None:
    result = run_smoke("zoo.py", tmp_path / "zoo.json")
    entry = result["sets"]["synthetic"]
    (row,) = entry["per_seed"]
    assert entry["test_acc_mean"] == pytest.approx(row["test_acc"], abs=1e-4)
    assert entry["test_auc_mean"] == pytest.approx(row["test_auc"], abs=1e-4)
    assert entry["minutes_per_seed"] > 0 and row["epochs_run"] == 1
    chosen = {c["key"]: c["value"] for c in entry["chosen"]}
    # The synthetic set is 28 px grey and balanced: what the rules must pick for it.
    assert chosen["image_size"] == 28 and chosen["train.imbalance"] == "none"
    assert chosen["train.select_metric"] == "val_auc" and row["selected_by"] == "val_auc"
    # The paired model-choice arms (weight average or raw weights, 1- or 3-epoch selection),
    # fed by the training's epoch hook: one epoch, so each arm picks it.
    assert set(row["arms"]) == {"ema-w1", "ema-w3", "raw-w1", "raw-w3"}
    assert all(arm["epoch"] == 1 and 0 <= arm["test_acc"] <= 1 for arm in row["arms"].values())


def test_tta_smoke_pairs_each_kept_run_off_and_on(tmp_path: Path) -> None:
    result = run_smoke("tta.py", tmp_path / "tta.json")
    rows = {r["set"]: r for r in result["per_run"]}
    assert set(rows) == {"synthetic", "synthetic-dihedral"} and result["sets"].keys() == rows.keys()
    # zoo's dihedral variant trains with every flip and angle: all 8 views are averaged.
    assert len(rows["synthetic-dihedral"]["views"]) == 8
    for name, row in rows.items():
        assert row["seed"] == 0 and row["views"][0] == "identity"
        for key in ("test_acc", "test_auc", "test_bacc"):
            assert row["diff"][key] == pytest.approx(row["on"][key] - row["off"][key], abs=1e-4)
            assert result["sets"][name][f"{key}_diff_mean"] == pytest.approx(row["diff"][key], abs=1e-4)
        if row["views"] == ["identity"]:      # nothing to average: "on" is "off" exactly
            assert row["on"] == row["off"]


def test_ensemble_smoke_averages_each_sets_seeds_with_and_without_tta(tmp_path: Path) -> None:
    result = run_smoke("ensemble.py", tmp_path / "ensemble.json")
    assert set(result["sets"]) == {"synthetic", "synthetic-dihedral"}
    for s in result["sets"].values():
        assert s["seeds"] == len(s["per_seed"]) == 1
        # One seed: its ensemble is the seed itself.
        for tta in ("off", "on"):
            assert s[f"ensemble_{tta}"] == s["per_seed"][0][tta] == s[f"single_{tta}_mean"]
    assert result["sets"]["synthetic-dihedral"]["per_seed"][0]["views_on"] == 8


def test_zoo_results_hold_means_and_choices_per_set() -> None:
    path = REPO / "bench" / "results" / "zoo.json"
    if not path.exists():
        pytest.skip("bench/results/zoo.json not yet written")
    zoo = json.loads(path.read_text())
    assert zoo["smoke"] is False
    for name, entry in zoo["sets"].items():
        seeds = entry["per_seed"]
        assert [s["seed"] for s in seeds] == entry["seeds"], name
        for metric in ("acc", "auc"):
            values = [s[f"test_{metric}"] for s in seeds]
            assert abs(entry[f"test_{metric}_mean"] - sum(values) / len(values)) < 1e-3, name
        assert entry["minutes_per_seed"] > 0 and entry["chosen"], name


@pytest.mark.slow
def test_build_classes_smoke_caps_what_the_report_shows(tmp_path: Path) -> None:
    result = run_smoke("build_classes.py", tmp_path / "classes.json")
    assert result["classes"] == 30 and result["build"]["seconds"] > 0
    assert result["build"]["peak_rss_mib"] > 0 and result["build"]["disk_mib"] > 0


def test_study_speed_smoke_builds_three_runs_twice(tmp_path: Path) -> None:
    result = run_smoke("study_speed.py", tmp_path / "study.json")
    assert result["setup"]["test_images"] == 40 and len(result["setup"]["runs"]) == 3
    assert result["cached"]["best_seconds"] > 0 and len(result["cached"]["rounds"]) == 1
    assert {"report.html", "report.en.pdf", "study.json"} <= set(result["files"])
    assert isinstance(result["meets_target"], bool) and result["target_seconds"] == 60.0
