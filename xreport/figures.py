"""The figures stage: every chart of a report, once per language, in the user's wording.

It receives the run's artifacts (checkpoint meta, evaluation, history, class distribution),
the loaded data set when there is one, the report languages and the templates folder, so a
user's ``--templates`` catalogs (``i18n/<lang>/charts.json``) reach every chart title, axis
and legend, exactly as they reach the HTML and PDF text. It writes
``reports/NAME/figures/<chart>.<lang>.png`` and returns the paths relative to the report
folder; the context (report.py) only places them.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from . import artifacts, runs
from .data.base import SPLITS, Dataset
from .errors import XReportError

if TYPE_CHECKING:
    import torch

    from .explain import GalleryPick
    from .models import ArchitectureSummary

logger = logging.getLogger(__name__)

# Set (to anything but "" or "0") to let a chart that fails raise instead of being left
# out with a warning: the tests set it, so a chart bug fails a test instead of hiding.
STRICT_ENV = "XREPORT_STRICT_FIGURES"
EXAMPLES_PER_CLASS = 4
BEFORE_AFTER_PAIRS = 4

FigurePaths = dict[str, str]               # language -> path relative to the report folder
Figures = dict[str, FigurePaths | None]    # chart -> its files, None when not drawn
Translate = Callable[..., str]


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


class FigureMaker:
    """Draw one chart per language into figures/<name>.<lang>.png (a failed chart is logged,
    or raised when ``XREPORT_STRICT_FIGURES`` is set)."""

    def __init__(self, report_dir: Path, langs: Sequence[str], *,
                 templates_dir: Path | None = None) -> None:
        from .render.messages import translator

        self.report_dir, self.langs = Path(report_dir), list(langs)
        self.translators = {lang: translator(lang, templates_dir) for lang in self.langs}
        self.failed: list[str] = []

    def draw(self, name: str, fn: Callable[[Translate, str], Figure]) -> FigurePaths | None:
        """``fn(t, lang) -> Figure``; returns {lang: relative path} or None when it failed."""
        from . import charts

        out: FigurePaths = {}
        for lang in self.langs:
            rel = f"figures/{name}.{lang}.png"
            try:
                with charts.chart_language(lang):  # Traditional/Simplified glyph forms
                    fig = fn(self.translators[lang], lang)
                    charts.save_figure(fig, self.report_dir / rel)
            except (XReportError, ValueError, KeyError, TypeError, IndexError) as exc:
                if strict():
                    raise
                # A chart that cannot be drawn should not cost the whole report.
                logger.warning("chart %s (%s) skipped: %s", name, lang, exc, exc_info=True)
                self.failed.append(name)
                return None
            out[lang] = rel
        return out


def localised_metrics(metrics: artifacts.Metrics, mapping: Mapping[str, str]) -> artifacts.Metrics:
    """A shallow copy with class names translated, for chart legends and axes."""
    out = metrics.copy()
    out["class_names"] = [mapping.get(n, n) for n in metrics["class_names"]]
    out["per_class"] = [{**row, "class": mapping.get(row["class"], row["class"])}
                        for row in metrics["per_class"]]
    curves = metrics["curves"]
    out["curves"] = {"roc": [{**c, "class": mapping.get(c["class"], c["class"])} for c in curves["roc"]],
                     "pr": [{**c, "class": mapping.get(c["class"], c["class"])} for c in curves["pr"]]}
    return out


@dataclass
class ReportFigures:
    """What the figures stage drew for one run (relative paths by chart and language)."""

    distribution: FigurePaths | None = None
    curves: FigurePaths | None = None
    examples: FigurePaths | None = None
    before_after: FigurePaths | None = None
    results: Figures = field(default_factory=dict)
    faithfulness: FigurePaths | None = None
    sanity: FigurePaths | None = None
    block_diagram: FigurePaths | None = None
    gallery: list[list[str]] | None = None   # draw_cam_gallery's files (None: metrics.json names them)
    failed: list[str] = field(default_factory=list)


def _largest_classes(dist: artifacts.ClassDistribution) -> list[int]:
    """limits.largest_classes over the images per class of every split."""
    from .limits import largest_classes

    k = len(dist["class_names"])
    return largest_classes([sum(c[i] for c in dist["splits"].values() if c is not None) for i in range(k)])


def _has_counts(dist: artifacts.ClassDistribution | None) -> bool:
    return dist is not None and any(counts is not None for counts in dist["splits"].values())


def _result_figures(metrics: artifacts.Metrics | None, maker: FigureMaker,
                    mappings: Mapping[str, Mapping[str, str]]) -> Figures:
    from . import charts

    if not metrics:
        return {}
    local = {lang: localised_metrics(metrics, mappings[lang]) for lang in maker.langs}
    cm = artifacts.shown_confusion(metrics)     # the classes shown in full (legible at 1000)
    labels = cm.labels
    figs: Figures = {
        "roc": maker.draw("roc", lambda t, lang: charts.roc_curves(local[lang], t=t)),
        "pr": maker.draw("pr", lambda t, lang: charts.pr_curves(local[lang], t=t)),
        "cm_raw": maker.draw("confusion_raw", lambda t, lang: charts.confusion_matrix(
            cm.raw, [mappings[lang].get(n, n) for n in labels], normalized=False, t=t)),
        "cm_true": maker.draw("confusion_by_true", lambda t, lang: charts.confusion_matrix(
            cm.by_true, [mappings[lang].get(n, n) for n in labels], normalized=True, t=t)),
        "reliability": None, "operating_points": None,
    }
    calibration = metrics.get("calibration")
    if calibration:
        figs["reliability"] = maker.draw("reliability", lambda t, lang: charts.reliability_diagram(
            calibration, t=t))
    if metrics["operating_points"]:
        figs["operating_points"] = maker.draw("operating_points", lambda t, lang: charts.operating_point_chart(
            local[lang], t=t))
    return figs


def _example_figures(config: Mapping[str, object], dataset: Dataset | None, maker: FigureMaker,
                     names_by_lang: Mapping[str, list[str]],
                     seed: int) -> tuple[FigurePaths | None, FigurePaths | None]:
    """Example grid from the loaded data set; before/after from the raw data when reachable."""
    from . import charts

    examples = None
    split = next((dataset.splits[s] for s in SPLITS
                  if dataset is not None and s in dataset.splits
                  and dataset.splits[s].labels is not None), None)
    if split is not None:
        rng = np.random.default_rng(seed)
        labels = split.known_labels().numpy()
        from .limits import REPORT_CLASSES

        present, counts = np.unique(labels, return_counts=True)
        # Beyond REPORT_CLASSES classes, the grid shows the largest ones (a row per class).
        shown = sorted(present[np.argsort(-counts, kind="stable")[:REPORT_CLASSES]].tolist())
        picked = [int(i) for c in shown
                  for i in rng.permutation(np.flatnonzero(labels == c))[:EXAMPLES_PER_CLASS]]
        images = [split.images[i].numpy() for i in picked]
        # The grid has a row per class it is given: give it the shown classes only.
        row_of = ({c: r for r, c in enumerate(shown)}
                  if len(names_by_lang[maker.langs[0]]) > REPORT_CLASSES else None)
        grid_labels = [int(labels[i]) if row_of is None else row_of[int(labels[i])] for i in picked]
        examples = maker.draw("examples", lambda t, lang: charts.example_grid(
            images, grid_labels, names_by_lang[lang] if row_of is None
            else [names_by_lang[lang][c] for c in shown], t=t, per_class=EXAMPLES_PER_CLASS))
    before_after = None
    try:
        from .config import from_dict
        from .data import raw_examples
        from .data.preprocess import preprocess_image

        cfg = from_dict(dict(config), source="checkpoint config")
        raw = raw_examples(cfg.data, 1, seed)[:BEFORE_AFTER_PAIRS]
        pairs = [(img, preprocess_image(img, cfg.preprocess, cfg.image_size)) for img, _ in raw]
    except (XReportError, OSError, ImportError) as exc:
        logger.info("before/after figure omitted: %s", exc)
        pairs = []
    if pairs:
        before_after = maker.draw("before_after",
                                  lambda t, lang: charts.preprocessing_before_after(pairs, t=t))
    return examples, before_after


GalleryFiles = list[list[str]]   # per gallery entry, its maps' overlays (relative to the evaluation folder)


def draw_cam_gallery(evaluation: runs.EvaluationPaths,
                     gallery: Sequence[artifacts.GalleryEntry]) -> GalleryFiles | None:
    """The CAM gallery's overlays, one PNG per map, into ``cams/`` beside metrics.json, from
    the maps evaluate saved (cams.npz). Returns each entry's files, in the order of its
    ``maps``; None for an evaluation without cams.npz (older: it drew them into cams/, and
    metrics.json names them). The overlays carry no words, so they are drawn once, not
    per language. Where the data know the lesions (phantom data), each overlay outlines
    its image's lesion, so a reader sees whether the map's hot spot falls on it.
    """
    from . import charts, explain

    cams = artifacts.load_gallery_cams(evaluation, gallery=gallery)
    if cams is None:
        return None
    evaluation.cams.mkdir(parents=True, exist_ok=True)
    for old in evaluation.cams.glob("*.png"):
        old.unlink()
    flat_maps = iter(cams.maps)
    drawn: GalleryFiles = []
    for i, entry in enumerate(gallery):
        raw = cams.images[i]
        content = explain.content_mask(raw)
        image = raw.transpose(1, 2, 0)
        image = image[..., 0] if image.shape[2] == 1 else image
        lesion = None if cams.masks is None else cams.masks[i]
        targets = [m["target"] for m in entry["maps"]] if entry["maps"] else [entry["target"] or 0]
        files = []
        for target in targets:
            name = f"{i:02d}_{entry['kind']}_c{entry['class_index']}_{entry['index']}_m{target}.png"
            cam = explain.without_padding(next(flat_maps), content)
            charts.save_figure(charts.cam_overlay(image, cam, colorbar=False, lesion=lesion),
                               evaluation.cams / name)
            files.append(f"{evaluation.cams.name}/{name}")
        drawn.append(files)
    return drawn


def draw_report_figures(report_dir: Path, *, meta: artifacts.CheckpointMeta,
                        evaluation: artifacts.Evaluation, history: artifacts.History,
                        distribution: artifacts.ClassDistribution | None, dataset: Dataset | None,
                        langs: Sequence[str], templates_dir: Path | None = None,
                        evaluation_paths: runs.EvaluationPaths | None = None,
                        architecture: ArchitectureSummary | None = None) -> ReportFigures:
    """Every chart of the single-run report, per language, with ``templates_dir``'s wording.

    ``architecture`` (``models.architecture_summary`` of the run's model) gives the block
    diagram; without it there is none."""
    from . import charts

    maker = FigureMaker(report_dir, langs, templates_dir=templates_dir)
    names = list(meta["class_names"])
    translations = artifacts.class_name_translations(meta)
    mappings = {lang: artifacts.class_name_map(names, translations.get(lang)) for lang in langs}
    names_by_lang = {lang: artifacts.class_names_in(meta, lang) for lang in langs}
    out = ReportFigures()
    if distribution is not None and _has_counts(distribution):
        keep = _largest_classes(distribution)     # 1000 groups of bars are neither legible nor quick
        out.distribution = maker.draw("class_distribution", lambda t, lang: charts.class_distribution(
            {**distribution, "class_names": [names_by_lang[lang][i] for i in keep],
             "splits": {s: (None if c is None else [c[i] for i in keep])
                        for s, c in distribution["splits"].items()}}, t=t))
    if history:
        out.curves = maker.draw("training_curves", lambda t, lang: charts.training_curves(
            history, selected_epoch=meta["epoch"], selected_by=meta["selected_by"], t=t))
    if architecture is not None and architecture["blocks"]:
        blocks = architecture["blocks"]
        out.block_diagram = maker.draw("block_diagram", lambda t, lang: charts.block_diagram(blocks, t=t))
    out.examples, out.before_after = _example_figures(meta["config"], dataset, maker, names_by_lang,
                                                      meta["seed"])
    out.results = _result_figures(evaluation["metrics"], maker, mappings)
    explained = evaluation["explain"]
    faith = explained["faithfulness"] if explained else None
    if faith and (faith["deletion_curve"] or faith["insertion_curve"]):
        out.faithfulness = maker.draw("faithfulness", lambda t, lang: charts.faithfulness_curves(faith, t=t))
    sanity = explained["sanity"] if explained else None
    if sanity and any(st["spearman"] is not None for st in sanity["stages"]):
        out.sanity = maker.draw("sanity", lambda t, lang: charts.sanity_similarity(sanity, t=t))
    if explained and evaluation_paths is not None:
        out.gallery = draw_cam_gallery(evaluation_paths, explained["gallery"])
    out.failed = sorted(set(maker.failed))
    return out
