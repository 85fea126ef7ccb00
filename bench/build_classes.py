"""`xreport build` at the documented maximum of 1000 classes: seconds, peak RSS and disk.

A synthetic MedMNIST-layout .npz (28 px grey, --classes classes, 2 train / 1 val / 2 test
images per class: about 4 MB) trains a resnet_tiny checkpoint for a few steps; then one cold
`xreport build` (HTML and PDF, en and zh-TW, the defaults) is measured in a child process:
wall seconds, CPU seconds, peak RSS (wait4) and the report folder's size on disk. The limits
(issue 23): at most 300 s, 2 GB and 50 MB on 2 cores.

    nice .venv/bin/python bench/build_classes.py [--classes 1000] [--smoke]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import common

RESULTS = common.RESULTS_DIR / "build_classes.json"
RUN = "classbench"
LIMITS = {"seconds": 300, "peak_rss_mib": 2048, "disk_mib": 50}


def many_class_npz(path: Path, *, classes: int, per_class: dict[str, int], size: int = 28) -> Path:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, n in per_class.items():
        labels = np.repeat(np.arange(classes), n)
        # Each class a little brighter than the last, so the model's outputs differ by class.
        base = (labels % 200).astype(np.int16)[:, None, None]
        noise = rng.integers(0, 56, (len(labels), size, size), dtype=np.int16)
        arrays[f"{split}_images"] = (base + noise).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.int32)
    np.savez(path, **arrays)
    return path


def disk_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="30 classes, HTML only (a test of the script)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    classes = 30 if args.smoke else args.classes
    started_load = common.load_average()
    with tempfile.TemporaryDirectory(prefix="xreport-classbench-") as tmp:
        root = Path(tmp)
        data = many_class_npz(root / "many.npz", classes=classes, per_class={"train": 2, "val": 1, "test": 2})
        os.environ.setdefault("XREPORT_DECODE_CACHE", "off")
        train = common.train_tiny_run(data, name=RUN, checkpoints=root / "checkpoints", max_steps=2,
                                      batch_size=64)
        build_args = ["build", "--run", RUN, "--checkpoints", str(root / "checkpoints"),
                      "--reports", str(root / "reports"), "--device", "cpu"]
        if args.smoke:
            build_args += ["--format", "html", "--lang", "en"]
        build = common.run_child(common.xreport_argv(*build_args))
        report = root / "reports" / RUN
        sizes = {p.relative_to(report).as_posix(): round(p.stat().st_size / 2**20, 2)
                 for p in sorted(report.rglob("*")) if p.is_file() and p.stat().st_size > 2**18}
        measured = {"seconds": round(build.seconds, 1), "cpu_seconds": round(build.cpu_seconds, 1),
                    "peak_rss_mib": round(build.peak_rss_mib, 1), "disk_mib": round(disk_mib(report), 2),
                    "files": sum(1 for p in report.rglob("*") if p.is_file())}
        print(f"{classes} classes: build {measured['seconds']} s, peak RSS {measured['peak_rss_mib']} MiB, "
              f"{measured['disk_mib']} MiB on disk in {measured['files']} files")
        within = {k: measured[k] <= v for k, v in LIMITS.items()}
        body = {"smoke": args.smoke, "classes": classes, "data_mib": round(data.stat().st_size / 2**20, 2),
                "images": {"train": 2 * classes, "val": classes, "test": 2 * classes},
                "train": train.as_dict(), "build": {**build.as_dict(), **measured},
                "largest_files_mib": sizes, "limits": LIMITS, "within_limits": within,
                "cores": os.cpu_count()}
        if not args.smoke or args.out != RESULTS:
            common.write_result(args.out, benchmark="build_classes", started_load=started_load, body=body)
    return 0 if all(within.values()) or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
