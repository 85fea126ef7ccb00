"""The figures stage: the user's catalogs reach the charts; charts draw into a given axes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from report_fixture import make_run
from xreport import artifacts, metrics, runs


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> runs.RunPaths:
    return make_run(tmp_path_factory.mktemp("figures"))


def test_user_templates_reach_the_chart_labels(run: runs.RunPaths, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's i18n/<lang>/charts.json changes the drawn titles and axes, not only the HTML."""
    from xreport import charts, figures

    user = tmp_path / "my_templates"
    (user / "i18n" / "en").mkdir(parents=True)
    (user / "i18n" / "en" / "charts.json").write_text(json.dumps(
        {"chart.roc.title_binary": "Custom ROC title", "chart.roc.xlabel": "Custom FPR axis"}),
        encoding="utf-8")
    drawn: dict[str, list[str]] = {}

    def capture(fig, path, **kwargs):
        drawn[Path(path).name] = [text for ax in fig.axes for text in (ax.get_title(), ax.get_xlabel())]
        return Path(path)
    monkeypatch.setattr(charts, "save_figure", capture)
    kwargs = dict(meta=artifacts.load_checkpoint_meta(run.best), evaluation=artifacts.load_evaluation(run),
                  history=artifacts.load_history(run), distribution=None, dataset=None, langs=["en"])
    stock = figures.draw_report_figures(tmp_path / "stock", **kwargs)
    stock_roc = drawn["roc.en.png"]
    mine = figures.draw_report_figures(tmp_path / "mine", templates_dir=user, **kwargs)
    assert stock.results["roc"] == mine.results["roc"] == {"en": "figures/roc.en.png"}
    assert "Custom ROC title" not in stock_roc and "Custom FPR axis" not in stock_roc
    assert {"Custom ROC title", "Custom FPR axis"} <= set(drawn["roc.en.png"])
    assert mine.failed == []


def test_a_failing_chart_raises_when_strict_and_is_left_out_otherwise(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from xreport.figures import STRICT_ENV, FigureMaker

    def broken(t, lang):
        raise ValueError("no data to draw")
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(ValueError, match="no data to draw"):
        FigureMaker(tmp_path, ["en"]).draw("broken", broken)
    monkeypatch.setenv(STRICT_ENV, "0")
    maker = FigureMaker(tmp_path, ["en"])
    assert maker.draw("broken", broken) is None and maker.failed == ["broken"]




def test_charts_draw_into_the_callers_axes() -> None:
    """Like scikit-learn's Display.plot(ax=...): a chart can be one panel of a user's figure."""
    from xreport import charts

    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 30)
    p1 = np.clip(y * 0.5 + rng.random(60) * 0.5, 0, 1)
    m = metrics.compute_all(y, np.stack([1 - p1, p1], axis=1), class_names=["neg", "pos"], task="binary",
                            n_boot=0)
    t = lambda key, **params: key   # noqa: E731 - the message key as the label
    fig = Figure(figsize=(12, 8))
    axes = fig.subplots(2, 3).flat
    drawn = [charts.roc_curves(m, t=t, ax=axes[0]), charts.pr_curves(m, t=t, ax=axes[1]),
             charts.operating_point_chart(m, t=t, ax=axes[2]),
             charts.confusion_matrix(m["confusion_matrix"]["raw"], ["neg", "pos"], normalized=False, t=t,
                                     ax=axes[3]),
             charts.class_distribution({"class_names": ["neg", "pos"], "splits": {"train": [3, 5]}}, t=t,
                                       ax=axes[4]),
             charts.compare_roc({"a": {"fpr": [0, 1], "tpr": [0, 1], "auc": None}}, t=t, ax=axes[5])]
    assert all(f is fig for f in drawn)
    assert [ax.get_title() for ax in axes][:2] == ["chart.roc.title_binary", "chart.pr.title_binary"]
    assert all(ax.has_data() for ax in axes)
    alone = charts.roc_curves(m, t=t)
    assert alone is not fig and len(alone.axes) == 1
