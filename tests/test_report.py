"""The report context on a small synthetic run folder (build.report_context: the figures
stage draws, report.build_context assembles): sections, figures per language, discussion."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from report_fixture import make_run, shared_run
from xreport import artifacts, build, report, runs
from xreport.config import AugmentConfig, RunConfig
from xreport.errors import ReportError
from xreport.render import load_catalog

SECTIONS = ("summary", "data", "model", "training", "results", "explain", "discussion", "repro", "skipped")


def test_context_has_every_section_and_is_json() -> None:
    _, ctx = shared_run()
    for key in SECTIONS:
        assert key in ctx, key
    json.dumps(ctx, allow_nan=False)            # language-neutral plain data
    assert ctx["failed_charts"] == []


def test_every_figure_is_drawn_once_per_language() -> None:
    paths, ctx = shared_run()
    figs = {**ctx["data"]["figures"], **ctx["training"]["figures"], **ctx["results"]["figures"],
            **ctx["explain"]["figures"]}
    drawn = {k: v for k, v in figs.items() if v}
    assert {"distribution", "curves", "roc", "pr", "cm_raw", "cm_true", "reliability",
            "operating_points", "faithfulness", "sanity", "before_after"} <= set(drawn)
    for ref in drawn.values():
        assert set(ref) == {"en", "zh-TW"}
        for lang, rel in ref.items():
            assert rel.startswith("figures/") and rel.endswith(f".{lang}.png")
            assert (paths.report_dir / rel).stat().st_size > 1000
    # No data set was passed: example images are omitted (the template says why).
    assert ctx["data"]["figures"]["examples"] is None


def test_numbers_come_from_the_run_folder() -> None:
    paths, ctx = shared_run()
    metrics = json.loads(paths.metrics.read_text())["metrics"]
    acc = ctx["summary"]["headline"][0]
    assert (acc["key"], acc["value"]) == ("metric.accuracy", metrics["accuracy"])
    assert ctx["summary"]["n_test"] == 80 and ctx["summary"]["arch"] == "resnet18"
    rows = ctx["results"]["report_rows"]
    assert [r["kind"] for r in rows] == ["class", "class", "macro", "weighted"]
    assert rows[1]["recall"] == metrics["per_class"][1]["recall"]
    assert ctx["model"]["params"] > 10_000_000 and ctx["model"]["flops"] > 0
    assert ctx["model"]["cam_layer"] == "layer4" and ctx["model"]["stem"] == "small"
    assert ctx["training"]["selected_epoch"] == 3 and ctx["training"]["epochs_run"] == 6
    assert ctx["data"]["splits"][0] == {"split": "train", "counts": [6, 18], "total": 24, "predicted": False}
    assert ctx["data"]["imbalance"]["method"] == "sampler"
    assert ctx["repro"]["checkpoint_sha256"] == runs.sha256_file(paths.best)
    assert "[train]" in ctx["repro"]["config_toml"]
    assert ctx["skipped"] == [{"file": "bad/broken.png", "reason": "not an image"}]


def test_the_report_states_the_explanation_protocol_and_its_image_counts() -> None:
    from xreport.render import render_html

    _, ctx = shared_run()
    protocol = ctx["explain"]["protocol"]
    assert {k: protocol[k] for k in ("name", "total", "faithfulness_n", "steps", "maps", "sanity_n", "seeds")} == {
        "name": "fast", "total": 80, "faithfulness_n": 16, "steps": 5, "maps": 2, "sanity_n": 8, "seeds": 3}
    html = render_html(ctx, langs=["en", "zh-TW"])
    assert ("Protocol “fast” (chosen with xreport build --explain fast|full; fast is the default on every "
            "device): faithfulness on 16 of the 80 evaluated images with 5 removal steps") in html
    assert "the sanity check on 8 images with 3 initialisations" in html
    assert "流程「快速」（以 xreport build --explain fast|full 選擇；各種裝置預設皆為快速）：忠實度使用 80 張已評估影像中的 16 張" in html


def test_gallery_grouped_by_class_then_kind() -> None:
    _, ctx = shared_run()
    gallery = ctx["explain"]["gallery"]
    assert [g["cls"] for g in gallery] == ["NORMAL", "PNEUMONIA"]
    assert [p["kind"] for p in gallery[0]["panels"]] == ["TP", "TP", "FN", "FN"]
    # A correct panel shows its class's map; a false negative the true class's map beside the
    # predicted class's, each with its role.
    tp, fn = gallery[0]["panels"][0], gallery[0]["panels"][2]
    assert [(m["cls"], m["roles"]) for m in tp["maps"]] == [("NORMAL", ["true", "pred"])]
    assert [(m["cls"], m["roles"]) for m in fn["maps"]] == [("NORMAL", ["true"]), ("PNEUMONIA", ["pred"])]
    assert (fn["true"], fn["pred"]) == ("NORMAL", "PNEUMONIA") and fn["prob_pred"] is not None
    assert [s["randomised"] for s in ctx["explain"]["sanity"]["stages"]] == ["fc", "layer4.1"]
    assert ctx["explain"]["sanity"]["verdict"] == "pass" and ctx["explain"]["sanity"]["seeds"] == 3
    faith = ctx["explain"]["faithfulness"]
    assert [r["metric"] for r in faith["rows"]] == ["deletion_auc", "insertion_auc", "road_morf", "road_lerf"]
    assert faith["rows"][0]["verdict"] == "better" and faith["rows"][0]["ci95"] == [-0.15, -0.07]
    assert faith["verdict"] == "mixed" and faith["maps"] == 2     # 3 of 4 better, 1 not: mixed
    assert [r["chance"] for r in ctx["explain"]["localisation"]["rows"]] == [0.07, 0.05]


def test_discussion_items_have_catalog_keys_and_anchors() -> None:
    _, ctx = shared_run()
    en = load_catalog("en")
    got = {i["key"] for i in ctx["discussion"]}
    # The fixture is built to overfit, lean towards PNEUMONIA and be imbalanced.
    assert {"discussion.overfitting", "discussion.imbalance"} <= got
    # It answers PNEUMONIA for 95% of images (62.5% of the truth): collapsed (metrics.collapsed),
    # which replaces the per-class leaning sentence.
    assert "discussion.collapsed" in got and "discussion.leans_towards" not in got
    for item in ctx["discussion"]:
        assert item["key"] in en and item["ref"]


def test_the_context_is_assembled_from_what_the_figures_stage_drew(tmp_path: Path) -> None:
    """report.build_context draws nothing: the charts come from the figures stage (build)."""
    from xreport.figures import ReportFigures

    paths = make_run(tmp_path)
    before = sorted(paths.report_dir.rglob("*"))
    ctx = report.build_context(report.load_inputs(paths), ReportFigures(failed=["roc"]), langs=["en"])
    assert sorted(paths.report_dir.rglob("*")) == before
    assert ctx["data"]["figures"]["distribution"] is None and ctx["failed_charts"] == ["roc"]
    assert ctx["summary"]["task"] == "binary" and ctx["class_names"] == ["NORMAL", "PNEUMONIA"]


def test_missing_metrics_is_a_clear_error(tmp_path: Path) -> None:
    paths = make_run(tmp_path)
    paths.metrics.unlink()
    with pytest.raises(ReportError, match="metrics.json"):
        build.report_context(paths, langs=["en"])


def test_unlabelled_test_split_and_a_loaded_dataset(tmp_path: Path) -> None:
    from xreport.config import from_dict
    from xreport.data import load_dataset

    paths = make_run(tmp_path)
    data = json.loads(paths.metrics.read_text())
    data["metrics"] = None
    data["explain"] = None
    runs.write_json(paths.metrics, data)
    cfg = from_dict(runs.load_checkpoint(paths.best).meta["config"])
    dataset = load_dataset(cfg.data, cfg.preprocess, image_size=cfg.image_size)
    ctx = build.report_context(paths, langs=["en"], dataset=dataset)
    assert ctx["results"] == {"available": False} and ctx["explain"] == {"available": False}
    assert ctx["summary"]["headline"] == []
    assert ctx["data"]["figures"]["examples"] == {"en": "figures/examples.en.png"}
    assert ctx["data"]["leakage"] is not None and {p["pair"] for p in ctx["data"]["leakage"]["pairs"]} >= {"train-test"}


def test_model_section_explains_the_architecture_from_the_model() -> None:
    paths, ctx = shared_run()
    md = ctx["model"]
    arch = md["architecture"]
    # The fixture is resnet18 with the small stem at 32 px: no downsampling before layer1.
    assert [s["name"] for s in arch["stages"]] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert [s["out_shape"] for s in arch["stages"]] == [[64, 32, 32], [64, 32, 32], [128, 16, 16],
                                                        [256, 8, 8], [512, 4, 4], [2]]
    assert [s["blocks"] for s in arch["stages"][1:5]] == [2, 2, 2, 2]
    assert md["params"] == arch["params"] and md["flops"] == arch["flops"]
    assert arch["blocks"][0]["kind"] == "basic"
    ref = md["figures"]["block_diagram"]
    assert set(ref) == {"en", "zh-TW"} and all((paths.report_dir / rel).stat().st_size > 1000 for rel in ref.values())


def test_the_model_is_rebuilt_once_for_the_whole_model_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xreport import models

    paths = make_run(tmp_path)
    built = []
    real = models.model_from_meta
    monkeypatch.setattr(models, "model_from_meta", lambda *a, **k: built.append(1) or real(*a, **k))
    forwards = []
    real_forward = models._counted_forward
    monkeypatch.setattr(models, "_counted_forward", lambda *a, **k: forwards.append(1) or real_forward(*a, **k))
    ctx = build.report_context(paths, langs=["en"])
    assert ctx["model"]["architecture"] is not None
    assert len(built) == 1 and len(forwards) == 1


def test_the_report_reads_the_model_summary_evaluate_recorded(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate records the summary of the model it loaded; the report reads it and rebuilds
    nothing (an older metrics.json without it: the model is rebuilt once, test above)."""
    from xreport import evaluate, models
    from xreport.evaluate import LoadedRun

    paths = make_run(tmp_path)
    checkpoint = runs.load_checkpoint(paths.best)
    model = models.model_from_meta(checkpoint.meta)
    loaded = LoadedRun(checkpoint=checkpoint, model=model, config=None,  # type: ignore[arg-type]
                       meta=checkpoint.meta, sha256="")
    recorded = evaluate._architecture(loaded)
    assert recorded is not None and recorded["flops"] == models.count_flops(model, 32, 1)
    raw = json.loads(paths.metrics.read_text())
    raw["architecture"] = {**recorded, "flops": recorded["flops"] + 1}   # what the report shows is this
    paths.metrics.write_text(json.dumps(raw))

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was rebuilt or run")

    monkeypatch.setattr(models, "model_from_meta", no_model)
    monkeypatch.setattr(models, "_counted_forward", no_model)
    ctx = build.report_context(paths, langs=["en"])
    assert ctx["model"]["flops"] == recorded["flops"] + 1 and ctx["model"]["params"] == recorded["params"]
    assert ctx["model"]["architecture"]["stages"] == recorded["stages"]
    assert ctx["model"]["figures"]["block_diagram"]


def test_the_training_section_names_the_batch_mixing_of_the_run_config() -> None:
    paths, ctx = shared_run()
    meta = artifacts.load_checkpoint_meta(paths.best)
    cfg = RunConfig(augment=AugmentConfig(cutmix=1.0))
    assert report._training(meta, cfg, [], None)["mixing"] == [("cutmix", 1.0)]
    both = RunConfig(augment=AugmentConfig(mixup=0.2, cutmix=1.0))
    assert report._training(meta, both, [], None)["mixing"] == [("mixup", 0.2), ("cutmix", 1.0)]
    assert ctx["training"]["mixing"] == []
