"""Test images that duplicate training images (exact copies, and near copies by the correlation of
their detail) are listed, and the test metrics are given again without them: in metrics.json, the
report's results and discussion, and compare."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xreport import artifacts, compare, discussion, report, runs
from xreport.config import DataConfig, PreprocessConfig, from_dict
from xreport.data import leakage_check, load_dataset
from xreport.data.summary import NEAR_CORRELATION, detail_signatures, near_matches
from xreport.evaluate import evaluate_run
from xreport.train import train


def noise(path: Path, seed: int, *, shift: int = 0) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 200, (32, 32), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr.astype(np.int16) + shift, 0, 255).astype(np.uint8)).save(path)
    return arr


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/val/test, 2 classes; test holds 2 byte copies and 1 brighter copy of train images."""
    root = tmp_path_factory.mktemp("leaky") / "d"
    seed = 0
    for split, n in (("train", 8), ("val", 4), ("test", 6)):
        for cls in ("a", "b"):
            for k in range(n):
                seed += 1
                noise(root / split / cls / f"{k}.png", seed)
    (root / "test" / "a" / "0.png").write_bytes((root / "train" / "a" / "0.png").read_bytes())
    (root / "test" / "b" / "0.png").write_bytes((root / "train" / "b" / "3.png").read_bytes())
    noise(root / "test" / "b" / "1.png", 1 + 8 + 2, shift=6)    # train/b/2.png, brighter
    return root


def test_exact_and_near_duplicates_of_train_are_listed(leaky: Path) -> None:
    ds = load_dataset(DataConfig(dataset=str(leaky)), PreprocessConfig(), image_size=32)
    found = leakage_check(ds)
    overlap = found["test_overlap"]
    assert (overlap["exact"], overlap["near"]) == (2, 1)
    assert sorted(overlap["ids"]) == ["test/a/0.png", "test/b/0.png", "test/b/1.png"]
    # Unrelated images are far apart; the brighter copy is within the threshold.
    train_sig = detail_signatures(ds.splits["train"].images)
    assert (near_matches(train_sig, train_sig) == np.arange(len(train_sig))).all()
    assert near_matches(detail_signatures(ds.splits["val"].images), train_sig).max() == -1


def _disc_photos(n: int, side: int, seed: int) -> torch.Tensor:
    """Distinct pictures that share one layout (a bright disc on black, like fundus photos),
    each with its own fine texture: uint8 (n, 3, side, side)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side - 0.5
    disc = (np.hypot(yy, xx) < 0.42) * 170.0
    out = np.stack([disc + rng.normal(0, 12, (side, side)) for _ in range(n)])
    return torch.from_numpy(np.clip(out, 0, 255).astype(np.uint8))[:, None].repeat(1, 3, 1, 1)


def test_a_shared_layout_is_not_a_duplicate_but_a_recoded_copy_is() -> None:
    """Whole-image similarity is high for any two photos of one layout; the detail signature
    tells distinct pictures from copies, and does so at any input size."""
    import torch.nn.functional as F
    photos = _disc_photos(12, 56, seed=1)
    train_sig = detail_signatures(photos[:8])
    assert near_matches(detail_signatures(photos[8:]), train_sig).max() == -1
    # The same pictures brighter, with lower contrast, and resized down and up again.
    recoded = (photos[:4].float() * 0.8 + 20).round().clamp(0, 255).to(torch.uint8)
    assert near_matches(detail_signatures(recoded), train_sig).tolist() == [0, 1, 2, 3]
    for side in (28, 112):
        resized = F.interpolate(photos.float(), size=(side, side), mode="bilinear", antialias=True)
        resized = resized.round().clamp(0, 255).to(torch.uint8)
        sig = detail_signatures(resized)
        assert near_matches(sig[8:], sig[:8]).max() == -1, side
    best = (detail_signatures(photos[8:]) @ train_sig.T).max()
    assert float(best) < NEAR_CORRELATION
    assert detail_signatures(torch.zeros(0, 3, 8, 8, dtype=torch.uint8)).shape == (0, 1024)


def test_metrics_twice_report_discussion_and_compare(leaky: Path, tmp_path: Path) -> None:
    config = from_dict({"name": "leaky", "image_size": 32, "data": {"dataset": str(leaky)},
                        "train": {"epochs": 1, "batch_size": 8, "recipe": "plain", "device": "cpu"}})
    train(config, checkpoints_root=tmp_path / "ck", command=["test"])
    paths = runs.RunPaths("leaky", checkpoints_root=tmp_path / "ck", reports_root=tmp_path / "rep")
    evaluate_run(paths, split="test", explain=False, n_boot=50, progress=False)
    saved = artifacts.load_evaluation(paths.evaluation("test"))
    dedup = saved["deduplicated"]
    assert (dedup["removed"], dedup["exact"], dedup["near"], dedup["n"]) == (3, 2, 1, 9)
    assert dedup["metrics"] is not None and dedup["metrics"]["n"] == 9
    assert saved["metrics"]["n"] == 12
    # An older metrics.json (no such key) still loads.
    raw = json.loads(paths.evaluation("test").metrics.read_text())
    del raw["deduplicated"]
    paths.evaluation("test").metrics.write_text(json.dumps(raw))
    assert "deduplicated" not in artifacts.load_evaluation(paths.evaluation("test"))

    shown = report._results(saved["metrics"], "test", {}, evaluation=saved)["deduplicated"]
    assert shown is not None and shown["n_full"] == 12 and shown["n"] == 9
    assert [row[0] for row in shown["rows"]][0] == "metric.accuracy"
    said = discussion.observations(saved["metrics"], deduplicated=dedup)
    assert [i["key"] for i in said if i["key"].startswith("discussion.duplicates")] == ["discussion.duplicates"]
    assert report._results(saved["metrics"], "val", {}, evaluation=saved)["deduplicated"] is None

    run = compare.EvaluatedRun(paths=paths, meta={}, evaluation=saved, ids=[], y_true=np.array([]),  # type: ignore[typeddict-item]
                               probs=np.zeros((0, 2)), history=[])
    keys = [row["key"] for row in compare._metric_rows([run, run])]
    assert "compare.dedup.accuracy" in keys and "compare.dedup.roc_auc" in keys


def test_every_new_message_exists_in_every_language() -> None:
    for lang in ("en", "zh-TW", "zh-CN"):
        folder = Path(report.__file__).resolve().parents[1] / "templates" / "i18n" / lang
        keys = {k for f in folder.glob("*.json") for k in json.loads(f.read_text(encoding="utf-8"))}
        for key in ("results.dedup.title", "results.dedup.intro", "results.dedup.full", "results.dedup.kept",
                    "results.dedup.hint", "discussion.duplicates", "discussion.duplicates_unscored",
                    "compare.dedup.accuracy", "compare.dedup.roc_auc", "data.class_match.prefix",
                    "data.class_match.case", "data.class_match.class_map"):
            assert key in keys, (lang, key)


@pytest.mark.slow
def test_real_sets_near_duplicates_do_not_depend_on_the_input_size() -> None:
    """RetinaMNIST's fundus photos all share one layout and have no copies across splits, at
    the native 28 px as upsampled; brain MRI's re-encoded copies are found at any size."""
    from conftest import real_data_dir

    from xreport.data.summary import overlap_with_test
    base = real_data_dir()
    if base is None or not (base / "retinamnist.npz").is_file() or not (base / "brain_mri").is_dir():
        pytest.skip("real data absent: ../shared/data (or $XREPORT_DATA_DIR)")
    for size in (28, 56):
        ds = load_dataset(DataConfig(dataset=str(base / "retinamnist.npz")), PreprocessConfig(), image_size=size)
        assert overlap_with_test(ds) == ([], 0, 0), size
    found = {}
    for size in (48, 96):
        ds = load_dataset(DataConfig(dataset=str(base / "brain_mri")), PreprocessConfig(), image_size=size)
        ids, exact, near = overlap_with_test(ds)  # type: ignore[misc]
        found[size] = set(ids)
        # data/README.md: byte-identical files in Training and Testing; the near copies
        # measured at 64-160 px number 257-259 (BENCHMARKS.md).
        assert exact == 216 and 240 <= near <= 280, (size, exact, near)
    assert len(found[48] ^ found[96]) <= 10
