"""The typed run-folder artifacts: one load/save per file, validated, forward compatible."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from report_fixture import make_run
from xreport import artifacts, runs
from xreport.errors import CheckpointError, ReportError

PACKAGE = Path(__file__).resolve().parents[1] / "xreport"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> runs.RunPaths:
    return make_run(tmp_path_factory.mktemp("artifacts"))


def _rewrite(paths: runs.RunPaths, edit) -> None:
    data = json.loads(paths.metrics.read_text(encoding="utf-8"))
    edit(data)
    paths.metrics.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture()
def copy(run: runs.RunPaths, tmp_path: Path) -> runs.RunPaths:
    """A private run folder with the fixture's metrics.json, checkpoint and history."""
    paths = runs.RunPaths(run.name, checkpoints_root=tmp_path / "c", reports_root=tmp_path / "r")
    for src, dst in ((run.metrics, paths.metrics), (run.best, paths.best), (run.history, paths.history)):
        runs.write_bytes(dst, src.read_bytes())
    return paths


def test_evaluation_round_trip_keeps_keys_a_newer_writer_added(copy: runs.RunPaths) -> None:
    def add(data: dict) -> None:
        data["explain"]["faithfulness"]["paired_test"] = {"p_value": 0.01, "verdict": "faithful"}
        data["metrics"]["per_class"][0]["new_stat"] = 1.5
        data["added_by_a_newer_writer"] = [1, 2]
    _rewrite(copy, add)
    loaded = artifacts.load_evaluation(copy)
    assert loaded["explain"]["faithfulness"]["paired_test"]["verdict"] == "faithful"
    artifacts.save_evaluation(copy, loaded)
    again = artifacts.load_evaluation(copy)
    assert again["added_by_a_newer_writer"] == [1, 2] and again["metrics"]["per_class"][0]["new_stat"] == 1.5


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["metrics"]["per_class"][1].__setitem__("support", "many"), "metrics.per_class[1].support"),
    (lambda d: d["metrics"].pop("confusion_matrix"), "metrics.confusion_matrix is missing"),
    (lambda d: d["metrics"]["accuracy"].__setitem__("value", "0.9"), "metrics.accuracy.value"),
    (lambda d: d["explain"]["gallery"][0].pop("kind"), "explain.gallery[0].kind is missing"),
    (lambda d: d.__setitem__("metrics", [1, 2]), "metrics must be"),
])
def test_a_foreign_field_fails_in_one_line_naming_file_and_field(copy: runs.RunPaths, edit, field: str) -> None:
    _rewrite(copy, edit)
    with pytest.raises(ReportError) as info:
        artifacts.load_evaluation(copy)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{copy.metrics}: ")
    assert field in message and "xreport evaluate --run fixture_run" in message


def test_keys_an_older_writer_left_out_load_as_none_or_their_default(copy: runs.RunPaths) -> None:
    """A declared key absent on disk reads as its default (artifacts._ABSENT) or None, so
    readers index it directly; a required key without either still fails (the test above)."""
    def strip(data: dict) -> None:
        data["explain"]["faithfulness"]["deletion_auc"].pop("p_value")
        entry = data["explain"]["gallery"][0]
        for key in ("maps", "true", "repeated"):
            entry.pop(key)
        data["metrics"]["macro_avg"].pop("f1")
        data["metrics"].pop("calibration")
        data.pop("skipped")
    _rewrite(copy, strip)
    loaded = artifacts.load_evaluation(copy)
    assert loaded["explain"]["faithfulness"]["deletion_auc"]["p_value"] is None
    entry = loaded["explain"]["gallery"][0]
    assert entry["maps"] is None and entry["true"] is None and entry["repeated"] is False
    assert loaded["metrics"]["macro_avg"]["f1"] is None and loaded["metrics"]["calibration"] is None
    assert loaded["skipped"] == []

    meta = artifacts.load_checkpoint_meta(copy.best)
    runs.save_checkpoint(copy.last, state_dict={},
                         meta={k: v for k, v in meta.items() if k not in ("head", "dropout", "created")})
    older = artifacts.load_checkpoint_meta(copy.last)
    assert (older["head"], older["dropout"], older["created"]) == ("linear", 0.0, None)


def test_random_maps_per_image_an_older_file_left_out_reads_one_way(copy: runs.RunPaths) -> None:
    """The faithfulness table, the protocol line and the discussion read one default (1,
    artifacts._ABSENT) where they read 1, None and 0 before."""
    from xreport import discussion, report
    from xreport.figures import ReportFigures

    _rewrite(copy, lambda data: data["explain"]["faithfulness"]["random_maps"].pop("per_image"))
    inputs = report.load_inputs(copy)
    faith = inputs.evaluation["explain"]["faithfulness"]
    assert faith is not None and faith["random_maps"]["per_image"] == 1
    ctx = report.build_context(inputs, ReportFigures(), langs=["en"])
    explain = ctx["explain"]
    assert explain["faithfulness"]["maps"] == explain["protocol"]["maps"] == 1
    said = discussion.observations(inputs.evaluation["metrics"], explain=inputs.evaluation["explain"])
    assert [o["params"]["maps"] for o in said if o["ref"] == "explain-faithfulness"] == [1]


def test_schema_versions_older_ask_for_evaluate_newer_ask_for_upgrade(copy: runs.RunPaths) -> None:
    _rewrite(copy, lambda d: d.__setitem__("schema", 0))
    with pytest.raises(ReportError, match=r"schema 0 is out of date.*re-run `xreport evaluate"):
        artifacts.load_evaluation(copy)
    _rewrite(copy, lambda d: d.__setitem__("schema", artifacts.EVALUATION_SCHEMA + 1))
    with pytest.raises(ReportError, match="newer than this xreport reads"):
        artifacts.load_evaluation(copy)
    copy.metrics.write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match="metrics.json: not valid JSON"):
        artifacts.load_evaluation(copy)
    copy.metrics.unlink()
    with pytest.raises(ReportError, match="metrics.json: not found; evaluate the run first"):
        artifacts.load_evaluation(copy)


def test_checkpoint_meta_is_validated_on_load(copy: runs.RunPaths) -> None:
    meta = artifacts.load_checkpoint_meta(copy.best)
    assert meta["arch"] == "resnet18" and meta["class_names"] == ["NORMAL", "PNEUMONIA"]
    for key, value, field in (("in_channels", 2, "in_channels must be 1 or 3"),
                              ("mean", ["a"], "mean[0] must be a number"),
                              ("class_names", ["only one"], "class_names must list num_classes")):
        runs.save_checkpoint(copy.last, state_dict={}, meta={**meta, key: value})
        with pytest.raises(CheckpointError, match=re.escape(field)) as info:
            artifacts.load_checkpoint_meta(copy.last)
        assert str(info.value).startswith(f"{copy.last}: ")


def test_an_older_meta_gets_each_absent_setting_from_one_place(copy: runs.RunPaths) -> None:
    """A meta from before seed, selected_by, weight_averaging and select_smoothing were
    recorded: the seed and the selection metric come from its own config, the rest are the
    defaults of that time, so every reader (report, figures, compare) indexes the same value."""
    meta = dict(artifacts.load_checkpoint_meta(copy.best))
    config = {**meta["config"], "train": {**meta["config"]["train"], "seed": 11, "select_metric": "val_f1"}}
    old = {k: v for k, v in meta.items()
           if k not in ("seed", "selected_by", "weight_averaging", "select_smoothing")}
    runs.save_checkpoint(copy.last, state_dict={}, meta={**old, "config": config})
    loaded = artifacts.load_checkpoint_meta(copy.last)
    assert (loaded["seed"], loaded["selected_by"]) == (11, "val_f1")
    assert (loaded["weight_averaging"], loaded["select_smoothing"]) == ("none", 1)
    bare = {**old, "config": {k: v for k, v in config.items() if k != "train"}}
    runs.save_checkpoint(copy.last, state_dict={}, meta=bare)
    loaded = artifacts.load_checkpoint_meta(copy.last)
    assert (loaded["seed"], loaded["selected_by"]) == (0, "val_auc")     # TrainConfig's defaults


def test_history_round_trip_reads_empty_cells_as_none_and_refuses_text(copy: runs.RunPaths) -> None:
    rows = [{c: i / 10 for c in artifacts.HISTORY_COLUMNS} for i in range(1, 4)]   # rates in [0, 1]
    rows[1]["val_auc"] = float("nan")
    for i, row in enumerate(rows, start=1):
        row["epoch"] = i
    artifacts.save_history(copy, rows)
    loaded = artifacts.load_history(copy)
    assert [r["epoch"] for r in loaded] == [1, 2, 3] and loaded[1]["val_auc"] is None
    assert loaded[2]["lr"] == 0.3
    copy.history.write_text(copy.history.read_text().replace("0.3", "three", 1), encoding="utf-8")
    with pytest.raises(ReportError, match=r"history.csv: row 3 column \w+ must be a number, not 'three'"):
        artifacts.load_history(copy)
    copy.history.unlink()
    assert artifacts.load_history(copy) == []


def test_predictions_round_trip(copy: runs.RunPaths) -> None:
    probs = np.array([[0.25, 0.75], [0.9, 0.1]])
    artifacts.save_predictions(copy, ["a.png", "007"], np.array([1, 0]), probs, class_names=["NORMAL", "PNEUMONIA"])
    ids, y_true, loaded = artifacts.load_predictions(copy)
    assert ids == ["a.png", "007"] and y_true.tolist() == [1, 0] and np.allclose(loaded, probs)
    # The predicted class is named beside its index.
    assert copy.predictions.read_text().splitlines()[1] == "a.png,1,1,PNEUMONIA,0.25,0.75"
    artifacts.save_predictions(copy, ["x"], None, probs[:1], class_names=["NORMAL", "PNEUMONIA"])
    assert artifacts.load_predictions(copy).y_true is None


def test_no_module_but_artifacts_reads_run_folder_json_or_csv() -> None:
    """The run folder's files are read in one place (render reads catalogs, config TOML)."""
    readers = re.compile(r"json\.loads?\(|csv\.(DictReader|reader)\(|read_csv\(")
    allowed = {"artifacts.py", "runs.py", "manifest.py"}  # + user CSVs
    offenders = [f"{p.relative_to(PACKAGE)}:{i}" for p in sorted(PACKAGE.rglob("*.py")) if p.name not in allowed
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if readers.search(line)]
    assert offenders == []


def test_schema_1_english_reasons_migrate_to_messages(copy: runs.RunPaths) -> None:
    from xreport import render

    def old(data: dict) -> None:
        data["schema"] = 1
        data["metrics"]["mcc"] = {"value": None, "reason": "MCC is 0/0: every prediction is the same class"}
        data["metrics"]["accuracy"]["ci95"] = None
        data["metrics"]["accuracy"]["ci95_reason"] = "no bootstrap resamples"
        data["skipped"] = [{"file": "x.png", "reason": "not an image"}]
    _rewrite(copy, old)
    loaded = artifacts.load_evaluation(copy)
    assert loaded["schema"] == artifacts.EVALUATION_SCHEMA
    assert loaded["metrics"]["mcc"]["reason"] == {
        "key": "reason.text", "params": {"text": "MCC is 0/0: every prediction is the same class"}}
    assert loaded["metrics"]["accuracy"]["ci95_reason"]["params"]["text"] == "no bootstrap resamples"
    assert loaded["skipped"] == [{"file": "x.png", "reason": "not an image"}]   # not a metric: kept
    say = render.message_text(render.translator("zh-TW"), str)
    assert say(loaded["metrics"]["mcc"]["reason"]) == "MCC is 0/0: every prediction is the same class"


def test_reasons_are_worded_in_the_report_language() -> None:
    from xreport import metrics, render

    r = metrics.compute_all(np.zeros(6, dtype=int), np.tile([0.7, 0.3], (6, 1)), class_names=["NORMAL", "PNEU"],
                            task="binary", n_boot=0)
    reason = r["roc_auc"]["reason"]
    assert reason == {"key": "reason.auc_class_absent", "params": {"cls": "PNEU"}}
    names = {"PNEU": {"en": "PNEU", "zh-TW": "肺炎", "zh-CN": "肺炎"}}
    words = {lang: render.message_text(render.translator(lang), lambda n, lang=lang: names[n][lang])(reason)
             for lang in render.LANGS}
    assert "does not occur in y_true" in words["en"]
    assert "肺炎" in words["zh-TW"] and "未出現" in words["zh-TW"] and "未出现" in words["zh-CN"]


def test_metrics_without_ap_ece_brier_intervals_still_load_and_render(copy: runs.RunPaths) -> None:
    """metrics.json written before AP, ECE and Brier had intervals: the interval is an optional
    key of a Value (no schema bump, no migration); the report then shows those three as point
    estimates and its results sentence does not claim an interval for every value."""
    from xreport import render
    from xreport.build import report_context

    def before_intervals(data: dict) -> None:
        data["schema"] = 2
        metrics = data["metrics"]
        for value in (metrics["average_precision"], metrics["calibration"]["ece"],
                      metrics["calibration"]["brier"]):
            value.pop("ci95", None)
            value.pop("ci95_reason", None)
    _rewrite(copy, before_intervals)
    loaded = artifacts.load_evaluation(copy)
    assert "ci95" not in loaded["metrics"]["average_precision"]
    assert loaded["metrics"]["average_precision"]["value"] is not None
    ctx = report_context(copy, langs=["en"])
    assert ctx["results"]["every_value_has_interval"] is False
    html = render.render_html(ctx, langs=["en"])
    t = render.translator("en")
    assert t("results.intro", n=ctx["results"]["n"], split=t("split.test")) in html
    assert t("results.intro_all_ci", n=ctx["results"]["n"], split=t("split.test")) not in html


def _gallery(counts: list[int]) -> list[artifacts.GalleryEntry]:
    return [{"class": "a", "class_index": 0, "kind": "TP", "index": i, "prob": 0.9, "target": 0,
             "id": str(i), "file": None, "true": "a", "true_index": 0, "prob_true": 0.9, "pred": "a",
             "pred_index": 0, "prob_pred": 0.9, "repeated": False, "lesion_outline": False,
             "maps": [{"target": t, "class": "a", "prob": 0.9, "file": None} for t in range(n)]}
            for i, n in enumerate(counts)]


def test_gallery_cams_round_trip_and_are_checked_against_the_gallery(tmp_path: Path) -> None:
    """cams.npz: written whole, read back equal, refused in one line when its shapes do not
    fit metrics.json's gallery, and absent (None) for an evaluation from before it."""
    out = runs.EvaluationPaths(tmp_path, "r")
    gallery = _gallery([1, 2])
    assert artifacts.load_gallery_cams(out, gallery=gallery) is None
    rng = np.random.default_rng(0)
    cams = artifacts.GalleryCams(images=rng.integers(0, 255, (2, 1, 8, 8), dtype=np.uint8),
                                 maps=rng.random((3, 8, 8), dtype=np.float32),
                                 counts=np.array([1, 2]), masks=None)
    artifacts.save_gallery_cams(out, cams, gallery=gallery)
    back = artifacts.load_gallery_cams(out, gallery=gallery)
    assert back is not None and back.masks is None and not list(tmp_path.glob("*.tmp"))
    assert all(np.array_equal(a, b) for a, b in zip(back[:3], cams[:3]))
    with pytest.raises(ReportError, match=r"cams\.npz: counts \[1, 2\] are not the gallery's maps per entry \[2, 2\]"):
        artifacts.load_gallery_cams(out, gallery=_gallery([2, 2]))
    with pytest.raises(ReportError, match="maps must be float32"):
        artifacts.save_gallery_cams(out, cams._replace(maps=cams.maps[:, :4]), gallery=gallery)
    out.gallery_cams.write_bytes(b"not a zip")
    with pytest.raises(ReportError, match=r"cams\.npz: not a readable \.npz"):
        artifacts.load_gallery_cams(out, gallery=gallery)


def test_saving_checks_what_it_writes_as_loading_does(copy: runs.RunPaths) -> None:
    """A writer's mistake fails where it is made, naming the file and field, and nothing is written."""
    before = copy.metrics.read_bytes()
    evaluation = artifacts.load_evaluation(copy)
    evaluation["predicted_counts"] = [1, -1]
    with pytest.raises(ReportError, match=r"metrics\.json: predicted_counts\[1\]"):
        artifacts.save_evaluation(copy, evaluation)
    evaluation = artifacts.load_evaluation(copy)
    evaluation["metrics"]["n"] = "80"  # type: ignore[index,typeddict-item]
    with pytest.raises(ReportError, match=r"metrics\.json: metrics\.n must be"):
        artifacts.save_evaluation(copy, evaluation)
    assert copy.metrics.read_bytes() == before
    with pytest.raises(ReportError, match=r"class_distribution\.json: class_names"):
        artifacts.save_class_distribution(copy, {"class_names": "a,b", "splits": {}})  # type: ignore[typeddict-item]
    assert not copy.class_distribution.exists()
