"""Hostile inputs through the real CLI (``python -m xreport``), one new process per case.

Every case must end with exactly one ``xreport: error:`` line on stderr, exit code 2, no
traceback, no secret in the output, and the report folder that was built before the case
must be byte-identical afterwards (no staging folder left either).

    python bench/hostile_cli.py [--only NAME ...] [--list] [--json out.json]

The workspace is a temporary folder holding a copy of the binary fixture run
(tests/fixtures/checkpoints/fixture_binary, phantom data, so nothing is downloaded) and
its report, built once with ``--format html --lang en``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "checkpoints" / "fixture_binary"
RUN = "fx"
SECRET = "hostile-secret-5b1e"


@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]      # workspace -> CLI arguments
    needle: str                              # must appear in the error line


def _xreport(ws: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "xreport", *args], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _roots(ws: Path) -> list[str]:
    return ["--checkpoints", str(ws / "checkpoints"), "--reports", str(ws / "reports")]


def _build(ws: Path, *more: str) -> list[str]:
    return ["build", "--run", RUN, "--format", "html", "--lang", "en", "--device", "cpu", *_roots(ws), *more]


def _templates(ws: Path, body: str, name: str = "tpl") -> Path:
    folder = ws / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "body.html.j2").write_text(body, encoding="utf-8")
    return folder


def _catalog(ws: Path, message: str) -> list[str]:
    folder = _templates(ws, "{{ t('report.title') }} {{ t('summary.generated', date='d', version='v') }}")
    (folder / "i18n" / "en").mkdir(parents=True)
    (folder / "i18n" / "en" / "x.json").write_text(json.dumps({"summary.generated": message}), encoding="utf-8")
    return _build(ws, "--templates", str(folder))


def _secret(ws: Path) -> Path:
    path = ws / "outside" / "secret.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(SECRET, encoding="utf-8")
    return path


def _symlink_include(ws: Path) -> list[str]:
    folder = _templates(ws, '{% include "leak.html.j2" %}')
    (folder / "leak.html.j2").symlink_to(_secret(ws))
    return _build(ws, "--templates", str(folder))


def _bad_run(ws: Path, name: str, damage: Callable[[Path], None]) -> list[str]:
    run_dir = ws / "checkpoints" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(FIXTURE, run_dir)
    damage(run_dir / "best.pt")
    return ["evaluate", "--run", str(run_dir), "--no-cam", "--device", "cpu", *_roots(ws)]


def _compress_storages(path: Path) -> None:
    with zipfile.ZipFile(path) as src:
        members = [(i.filename, src.read(i)) for i in src.infolist()]
    with zipfile.ZipFile(path, "w") as dst:
        for name, data in members:
            dst.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if "/data/" in name else zipfile.ZIP_STORED)


def _nan_weights(path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from xreport import runs

    ckpt = runs.load_checkpoint(path)
    state = {k: v.clone() for k, v in ckpt.state_dict.items()}
    for key, value in state.items():
        if value.is_floating_point():
            value[...] = float("nan")
            break
    runs.save_checkpoint(path, state_dict=state, meta=ckpt.meta)


def _forged_npz(ws: Path) -> list[str]:
    path = ws / "forged.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in {"train_labels": np.zeros(4, np.uint8), "val_labels": np.zeros(4, np.uint8),
                           "val_images": np.zeros((4, 8, 8), np.uint8)}.items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            zf.writestr(f"{key}.npy", buffer.getvalue())
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (4, 10**6, 10**6)})
        zf.writestr("train_images.npy", buffer.getvalue() + b"\0" * 16, compress_type=zipfile.ZIP_DEFLATED)
    return ["train", "--dataset", str(path), "--name", "forged", "--epochs", "1",
            "--checkpoints", str(ws / "checkpoints")]


def _image_folder(ws: Path, name: str) -> Path:
    from PIL import Image

    root = ws / name
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def _train_folder(ws: Path, root: Path, name: str) -> list[str]:
    return ["train", "--dataset", str(root), "--name", name, "--image-size", "16", "--epochs", "1",
            "--max-steps", "1", "--checkpoints", str(ws / "checkpoints")]


def _link_out_of_root(ws: Path) -> list[str]:
    root = _image_folder(ws, "linked")
    fifo = ws / "outside" / "fifo.png"
    fifo.parent.mkdir(exist_ok=True)
    if not fifo.exists():
        os.mkfifo(fifo)
    (root / "train" / "a" / "leak.png").symlink_to(fifo)
    return _train_folder(ws, root, "linked")


def _class_without_train(ws: Path) -> list[str]:
    root = _image_folder(ws, "missing")
    for split in ("val", "test"):
        (root / split / "c").mkdir()
        shutil.copy(root / split / "a" / "0.png", root / split / "c" / "0.png")
    (root / "train" / "c").mkdir()
    return _train_folder(ws, root, "missing")


def _config(ws: Path, text: str) -> list[str]:
    path = ws / "hostile.toml"
    path.write_text(text, encoding="utf-8")
    return ["train", "--config", str(path), "--checkpoints", str(ws / "checkpoints")]


CASES = [
    Case("img_etc_passwd", lambda ws: _build(ws, "--templates", str(_templates(ws, '{{ img("/etc/passwd") }}'))),
         "outside the templates and report folders"),
    Case("img_parent_path", lambda ws: _build(ws, "--templates", str(_templates(
        ws, '{{ img("' + os.path.relpath(_secret(ws), ws / "reports" / RUN) + '") }}'))), "outside"),
    Case("symlinked_include", _symlink_include, "outside"),
    Case("catalog_mro", lambda ws: _catalog(ws, "{date.__class__.__mro__}"), "not allowed"),
    Case("catalog_subclasses", lambda ws: _catalog(ws, "{version.__class__.__base__.__subclasses__}"), "not allowed"),
    Case("catalog_huge_width", lambda ws: _catalog(ws, "{date:>100000000}"), "not allowed"),
    Case("template_string_times_10e12", lambda ws: _build(ws, "--templates", str(_templates(ws, "{{ 'x' * 10**12 }}"))),
         "limit"),
    Case("template_nested_range", lambda ws: _build(ws, "--templates", str(_templates(
        ws, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"))), "loop iterations"),
    Case("template_lipsum", lambda ws: _build(ws, "--templates", str(_templates(ws, "{{ lipsum(10**9) }}"))),
         "template"),
    Case("build_templates_missing", lambda ws: _build(ws, "--templates", str(ws / "nowhere")), "--templates"),
    Case("evaluate_bad_cam", lambda ws: ["evaluate", "--run", RUN, "--cam", "nonsense", "--split", "val",
                                         *_roots(ws)], "--cam"),
    Case("build_bad_lang", lambda ws: _build(ws, "--lang", "fr"), "--lang"),
    Case("config_is_a_folder", lambda ws: ["train", "--config", str(ws)], "a folder"),
    Case("config_phantom_size_huge", lambda ws: _config(ws, "[data]\nphantom_size = 100000\n"), "phantom_size"),
    Case("config_negative_phantom_seed", lambda ws: _config(ws, "[data]\nphantom_seed = -1\n"), "phantom_seed"),
    Case("config_batch_size_one", lambda ws: _config(ws, "[train]\nbatch_size = 1\n"), "batch_size"),
    Case("npz_forged_header", _forged_npz, "holds only"),
    Case("image_link_out_of_root", _link_out_of_root, "outside the data folder"),
    Case("class_without_training_images", _class_without_train, "no training images"),
    Case("checkpoint_compressed_storage", lambda ws: _bad_run(ws, "zipbomb", _compress_storages), "compressed"),
    Case("checkpoint_nan_weights", lambda ws: _bad_run(ws, "nan", _nan_weights), "NaN"),
    Case("reports_root_is_a_file", lambda ws: ["evaluate", "--run", RUN, "--no-cam", "--checkpoints",
                                               str(ws / "checkpoints"), "--reports", str(ws / "outside" / "secret.txt")],
         "secret.txt"),
]


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def prepare(ws: Path) -> None:
    shutil.copytree(FIXTURE, ws / "checkpoints" / RUN)
    _secret(ws)
    proc = _xreport(ws, *_build(ws))
    if proc.returncode != 0:
        raise SystemExit(f"the reference build failed:\n{proc.stderr[-2000:]}")


def check(case: Case, ws: Path, before: dict[str, str]) -> dict:
    started = time.perf_counter()
    args = case.setup(ws)
    proc = _xreport(ws, *args)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("xreport: error:")]
    problems = []
    if proc.returncode != 2:
        problems.append(f"exit {proc.returncode}")
    if "Traceback" in proc.stderr:
        problems.append("traceback")
    if len(lines) != 1:
        problems.append(f"{len(lines)} error lines")
    elif case.needle not in lines[0]:
        problems.append(f"{case.needle!r} not in the error line")
    if SECRET in proc.stdout + proc.stderr:
        problems.append("the secret reached the output")
    if snapshot(ws / "reports" / RUN) != before:
        problems.append("the report folder changed")
    if any(".staging-" in p.name for p in (ws / "reports").iterdir()):
        problems.append("a staging folder was left")
    return {"case": case.name, "ok": not problems, "problems": problems,
            "error": lines[0] if lines else proc.stderr.strip()[-300:],
            "seconds": round(time.perf_counter() - started, 1)}


def run(names: list[str] | None = None) -> list[dict]:
    selected = [c for c in CASES if not names or c.name in names]
    with tempfile.TemporaryDirectory(prefix="xreport-hostile-") as folder:
        ws = Path(folder)
        prepare(ws)
        before = snapshot(ws / "reports" / RUN)
        return [check(case, ws, before) for case in selected]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="case names")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(c.name for c in CASES))
        return 0
    results = run(args.only)
    for r in results:
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['case']:<34} {r['seconds']:>5.1f} s  "
              f"{'; '.join(r['problems']) or r['error'][:110]}")
    failed = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)}/{len(results)} hostile cases ended in one line, exit 2, "
          "no traceback, report folder intact")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
