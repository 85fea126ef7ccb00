"""The `xreport` command: options -> config -> one library call. No maths here."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Sequence

from . import __version__, api, languages
from .data.base import REPORT_SPLITS, SPLITS
from .errors import ConfigError, XReportError
from .explain import DEFAULT_CAM_METHOD, cam_methods
from .languages import DEFAULT_LANGS
from .runs import DEFAULT_CHECKPOINTS, DEFAULT_REPORTS, RunPaths


logger = logging.getLogger("xreport")


def _run_paths(value: str, *, checkpoints: Path, reports: Path) -> RunPaths:
    """A run name, or a path to a run folder or a checkpoint file inside one (api.open_run)."""
    return api.open_run(value, checkpoints=checkpoints, reports=reports).paths


def _add_tta(p: argparse.ArgumentParser) -> None:
    # The choices are evaluate.TTA_CHOICES (not imported: the CLI starts without torch).
    p.add_argument("--tta", nargs="?", const="on", default="off", choices=("off", "on"),
                   help="test-time augmentation: average each image's probabilities over the flips and "
                   "quarter turns the run was trained with (none for a run trained without them); "
                   "CAMs stay on the image itself (default off; --tta alone means on)")


def _add_roots(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoints", type=Path, default=DEFAULT_CHECKPOINTS,
                   help="folder of run folders (default: checkpoints)")
    p.add_argument("--reports", type=Path, default=DEFAULT_REPORTS,
                   help="folder of report folders (default: reports)")


def _split_list(value: str) -> list[str]:
    return [v for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xreport", description=(
        "Train medical-image classifiers and turn a checkpoint into a bilingual lab report."))
    parser.add_argument("--version", action="version", version=f"xreport {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    # The methods registered when the parser is built (explain.register_cam_method); an
    # unknown one is refused by evaluate.check_report_options with a one-line error.
    cam_help = f"CAM method: {', '.join(cam_methods())} (default: %(default)s)"

    t = sub.add_parser("train", help="train a ResNet/DenseNet and write checkpoints/NAME/")
    t.add_argument("--config", type=Path, help="run config (TOML); flags below override it")
    t.add_argument("--name", help="run name (folder under --checkpoints)")
    t.add_argument("--dataset", help="pneumoniamnist, phantom, or a path (.npz, image folder, CSV folder)")
    t.add_argument("--arch", help="resnet18|resnet34|resnet50|resnet101|resnet152|densenet121")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--image-size", type=int)
    t.add_argument("--pretrained", action="store_true", default=None,
                   help="torchvision ImageNet weights (torch hub cache, else downloaded into it)")
    t.add_argument("--weights", help="a local torchvision-compatible state_dict to start from")
    t.add_argument("--recipe", choices=("auto", "plain"),
                   help="auto (default): unset keys chosen from the data; plain: fixed defaults")
    t.add_argument("--seed", type=int)
    t.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="train one run per seed, NAME-s<SEED>, one after the other (a study of them: "
                   "build --runs NAME-s0 NAME-s1 ...)")
    t.add_argument("--device", help="auto|cpu|cuda|cuda:N")
    t.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (smoke tests)")
    t.add_argument("--skip-bad-images", action="store_true", default=None,
                   help="skip unreadable images (counted and listed) instead of stopping")
    t.add_argument("--resume", action="store_true", help="continue from last.pt")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the files of an existing run of the same name")
    t.add_argument("--checkpoints", type=Path, default=DEFAULT_CHECKPOINTS)

    i = sub.add_parser("import", help="a model trained elsewhere (torchvision state_dict) -> checkpoints/NAME/")
    i.add_argument("--weights", required=True, type=Path,
                   help="the state_dict file (bare, or under 'state_dict'/'model'; DDP's 'module.' prefix allowed)")
    i.add_argument("--arch", help="its architecture: resnet18|resnet34|resnet50|resnet101|resnet152|densenet121")
    i.add_argument("--dataset", help="the data it classifies: pneumoniamnist, phantom, or a path")
    i.add_argument("--name", required=True, help="run name (folder under --checkpoints)")
    i.add_argument("--config", type=Path, help="run config (TOML) for preprocessing and class options; "
                   "flags override it")
    i.add_argument("--image-size", type=int, help="the input size the model was trained at")
    i.add_argument("--recipe", choices=("auto", "plain"),
                   help="auto (default): unset keys (image size...) chosen from the data; plain: fixed defaults")
    i.add_argument("--skip-bad-images", action="store_true", default=None,
                   help="skip unreadable images (counted and listed) instead of stopping")
    i.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")
    i.add_argument("--checkpoints", type=Path, default=DEFAULT_CHECKPOINTS)

    e = sub.add_parser("evaluate", help="run a checkpoint on a split -> predictions.csv, metrics.json")
    e.add_argument("--run", required=True, help="run name, run folder, or checkpoint path")
    e.add_argument("--split", default="test", choices=SPLITS)
    e.add_argument("--data", help="evaluate on other data (external validation); written to "
                   "reports/NAME/external-<data name>/, never over the run's own files")
    e.add_argument("--out", type=Path, help="folder for predictions.csv, metrics.json, cams.npz "
                   "(default: reports/NAME/ for the test split, reports/NAME/<split>/ for another, "
                   "reports/NAME/external-<data name>/ with --data)")
    e.add_argument("--class-map", metavar="OLD=NEW,...",
                   help="rename the classes of --data onto the run's (classes match by name; "
                   "data whose names differ is refused without a map); default: the run's data.class_map")
    e.add_argument("--device", default="auto")
    _add_tta(e)
    e.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="inference precision (default fp32; bf16 moves probabilities by up to ~0.01)")
    e.add_argument("--cam", default=DEFAULT_CAM_METHOD, help=cam_help)
    e.add_argument("--no-cam", action="store_true", help="skip CAMs and faithfulness")
    e.add_argument("--explain", default="fast", choices=("fast", "full"),
                   help="explanation checks: fast (default, on every device: 3 removal levels, 2 random "
                   "maps, 3 cascade seeds) or full (9, 4, 5, ~3x the passes); both on 64 "
                   "faithfulness and 16 sanity images")
    _add_roots(e)

    b = sub.add_parser("build", help="render reports/NAME/report.html and PDFs (one run, or a study of several)")
    which = b.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="run name, run folder, or checkpoint path")
    which.add_argument("--runs", nargs="+", metavar="RUN",
                       help="a study: several runs evaluated on the same test split, in one report")
    b.add_argument("--name", help="with --runs: the study's report folder name (default: compare-A-B...)")
    b.add_argument("--notes", nargs="+", type=Path, default=[], metavar="FILE",
                   help="your own words in Markdown: notes.en.md, notes.zh-TW.md, notes.zh-CN.md "
                   "(notes.md serves every language); front matter title, authors, affiliation, date, ...")
    b.add_argument("--no-cams", action="store_true",
                   help="with --runs: evaluate stale runs without CAMs (faster; no CAM comparison)")
    b.add_argument("--lang", default=",".join(DEFAULT_LANGS),
                   help=f"comma list of {', '.join(languages.codes())} (default: %(default)s)")
    b.add_argument("--format", default="html,pdf", help="comma list of html, pdf")
    b.add_argument("--templates", type=Path, help="a folder with your copy of the templates")
    b.add_argument("--cam", default=DEFAULT_CAM_METHOD, help=cam_help)
    b.add_argument("--explain", default="fast", choices=("fast", "full"),
                   help="explanation checks: fast (default, on every device: 3 removal levels, 2 random "
                   "maps, 3 cascade seeds) or full (9, 4, 5, ~3x the passes); both on 64 "
                   "faithfulness and 16 sanity images")
    b.add_argument("--split", default="test", choices=REPORT_SPLITS,
                   help="the split the report is about; an unlabelled test split gets its "
                   "predictions (predictions.csv) and the report shows the validation metrics")
    b.add_argument("--device", default="auto")
    b.add_argument("--force", action="store_true", help="re-run inference even when cached")
    b.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="inference precision (default fp32; bf16 moves probabilities by up to ~0.01)")
    _add_tta(b)
    _add_roots(b)

    c = sub.add_parser("compare", help="set runs side by side in one report (build --runs without notes or CAMs)")
    c.add_argument("--runs", nargs="+", required=True, metavar="RUN")
    c.add_argument("--name", help="report folder name (default: compare-A-B...)")
    c.add_argument("--lang", default=",".join(DEFAULT_LANGS),
                   help=f"comma list of {', '.join(languages.codes())} (default: %(default)s)")
    c.add_argument("--format", default="html,pdf")
    c.add_argument("--device", default="auto")
    _add_roots(c)

    d = sub.add_parser("demo", help="phantom data -> train -> report, offline, a few minutes")
    d.add_argument("--out", type=Path, default=Path("."),
                   help="folder that receives checkpoints/ and reports/ (default: here)")
    d.add_argument("--quick", action="store_true", help="a smaller, faster demo (under a minute)")
    d.add_argument("--format", default="html,pdf")
    return parser


def _train(args: argparse.Namespace) -> int:
    from . import runs
    from .train import train_seeds

    overrides = {key: getattr(args, key) for key in api.SHORT_KEYS}
    command = shlex.split(args.command_line)
    if args.seeds is None:
        run = api.train(args.config, checkpoints=args.checkpoints, resume=args.resume,
                        overwrite=args.overwrite, command=command, **overrides)
        if int(os.environ.get("RANK", "0")) != 0 or run.trained is None:  # under torchrun, one summary line
            return 0
        result = run.trained
        print(f"trained {run.name}: best epoch {result.best_epoch} "
              f"({result.selected_by} {result.best_score:.4f}) -> {result.run_dir}")
        return 0
    # Checked before the data are read: one line, nothing written.
    if args.resume:
        raise ConfigError("--seeds starts new runs; --resume continues one: resume each seed's "
                          "run on its own (xreport train --config checkpoints/NAME-sK/config.toml --resume)")
    if args.seed is not None:
        raise ConfigError("--seed and --seeds together: give the seeds with --seeds only")
    runs.seed_run_names(args.name or "run", args.seeds)
    resolved = api.resolve_config(args.config, api.config_overrides(overrides), from_command_line=True)
    cfg = resolved.config
    results = train_seeds(cfg, args.seeds, checkpoints_root=args.checkpoints, command=command,
                          overwrite=args.overwrite, recipe_choices=resolved.choices)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    for seed, result in zip(args.seeds, results):
        print(f"trained {result.run_dir.name} (seed {seed}): best epoch {result.best_epoch} "
              f"({cfg.train.select_metric} {result.best_score:.4f}) -> {result.run_dir}")
    print("a study of these runs: xreport build --runs "
          + " ".join(r.run_dir.name for r in results) + f" --name {cfg.name}-seeds")
    return 0


def _import(args: argparse.Namespace) -> int:
    from .importer import import_run

    overrides = {"name": args.name, "image_size": args.image_size, "data.dataset": args.dataset,
                 "data.skip_bad_images": args.skip_bad_images, "model.arch": args.arch,
                 "train.recipe": args.recipe}
    resolved = api.resolve_config(args.config, overrides, from_command_line=True,
                                  log_keys=("image_size",))   # the rest is for training
    result = import_run(resolved.config, args.weights, checkpoints_root=args.checkpoints,
                        command=shlex.split(args.command_line), overwrite=args.overwrite,
                        recipe_choices=resolved.choices)
    stem = "small-input" if result.small_input_stem else "standard"
    print(f"imported {resolved.config.name}: {result.arch}, {result.num_classes} classes, "
          f"{result.in_channels}-channel input, {stem} stem, sha256 {result.sha256[:12]} -> {result.run_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    done = api.evaluate(args.run, split=args.split, device=args.device, data=args.data, tta=args.tta,
                        cam=args.cam, explain=not args.no_cam, out=args.out, precision=args.precision,
                        class_map=_class_map(args.class_map), explain_protocol=args.explain,
                        checkpoints=args.checkpoints, reports=args.reports)
    metrics = done.metrics
    acc = metrics["accuracy"].get("value") if metrics else None
    summary = f"accuracy {acc:.4f}" if isinstance(acc, float) else "no labels: predictions only"
    print(f"evaluated {done.run.name} on {args.split} ({summary}) -> {done.predictions}, {done.metrics_file}")
    return 0


def _class_map(value: str | None) -> dict[str, str] | None:
    """``--class-map OLD=NEW,...`` as a table (the same as the config's data.class_map)."""
    from .errors import ConfigError

    if value is None:
        return None
    table: dict[str, str] = {}
    for pair in _split_list(value):
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip() or old.strip() in table:
            raise ConfigError(f"--class-map {value!r}: give OLD=NEW pairs separated by commas, each "
                              "old name once")
        table[old.strip()] = new.strip()
    return table


def _build(args: argparse.Namespace) -> int:
    if args.runs:
        return _study(args)
    if args.name:
        raise ConfigError("--name names a study's report folder; use it with --runs (a run's report "
                          "folder is named after the run)")
    report = api.build(args.run, lang=args.lang, formats=args.format, templates=args.templates,
                       cam=args.cam, device=args.device, force=args.force, split=args.split,
                       precision=args.precision, explain_protocol=args.explain, notes=args.notes,
                       tta=args.tta, checkpoints=args.checkpoints, reports=args.reports,
                       command=args.command_line)
    how = "cached predictions" if report.reused_predictions else "fresh predictions"
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items() if k != "total")
    print(f"built {report.name} in {report.seconds['total']:.1f} s ({how}; {stages}):")
    for f in report.files:
        print(f"  {f}")
    return 0


def _study(args: argparse.Namespace) -> int:
    if args.split != "test" or args.force or args.tta != "off":
        option = ("--split " + args.split if args.split != "test" else "--force" if args.force
                  else "--tta " + args.tta)
        raise ConfigError(f"{option} is for a single run (--run); a study reads each run's test "
                          "evaluation as it is cached")
    report = api.build(runs=args.runs, name=args.name, lang=args.lang, formats=args.format,
                       notes=args.notes, device=args.device, templates=args.templates,
                       cams=not args.no_cams, checkpoints=args.checkpoints, reports=args.reports,
                       command=args.command_line)
    print(f"built study {report.name} of {', '.join(report.runs)} in {report.seconds['total']:.1f} s:")
    for f in report.files:
        print(f"  {f}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .study import compare_runs

    runs = [_run_paths(r, checkpoints=args.checkpoints, reports=args.reports) for r in args.runs]
    result = compare_runs(runs, name=args.name, reports_root=args.reports,
                          langs=_split_list(args.lang), formats=_split_list(args.format),
                          device=args.device, command=args.command_line)
    print(f"compared {', '.join(r.name for r in runs)}:")
    for f in result.files:
        print(f"  {f}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(args.out, quick=args.quick, formats=_split_list(args.format),
                      command=args.command_line)
    print(result.summary())
    return 0


COMMANDS = {"train": _train, "import": _import, "evaluate": _evaluate, "build": _build, "compare": _compare,
            "demo": _demo}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = api.command_line(argv)
    # A log file on a full disk must not print a traceback of its own; the write that
    # matters (a checkpoint, a report) fails with one line.
    logging.raiseExceptions = False
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # WeasyPrint and fontTools narrate every layout step at INFO; keep the user's log readable.
    for noisy in ("weasyprint", "fontTools", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except XReportError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("xreport: interrupted; files already written are complete", file=sys.stderr)
        return 130
    except MemoryError:
        return _fail("out of memory: an input (data, checkpoint, template or config) asks for "
                     "more memory than this machine has; check its declared sizes", 2)
    except OSError as exc:
        return _fail(os_error_text(exc), 2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if _is_out_of_memory(exc):
            return _fail(f"out of memory ({_first_line(exc)}); use a smaller batch size, "
                         "image size or data set", 2)
        if args.verbose:
            traceback.print_exc()
        return _fail(f"internal error ({type(exc).__name__}: {_first_line(exc)}); this is a bug "
                     "in xreport, please report it with the command line"
                     + ("" if args.verbose else " (run with -v for the traceback)"), 1)


def _fail(message: str, code: int) -> int:
    # One line, always: a value quoted in the message may itself hold a line break.
    print(f"xreport: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] if text else type(exc).__name__


def os_error_text(exc: OSError) -> str:
    """An OSError as "<file>: <what is wrong>" (disk full, read-only, a file for a folder)."""
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    what = exc.strerror or _first_line(exc)
    hint = {errno.ENOSPC: "; free some space and run the command again",
            errno.EROFS: "; choose a writable folder",
            errno.EACCES: "; check the permissions", errno.EPERM: "; check the permissions",
            errno.ENOTDIR: "; a file stands where a folder is expected",
            errno.EISDIR: "; a folder was given where a file is expected"}.get(exc.errno or 0, "")
    return f"{' -> '.join(names) or 'a file'}: {what}{hint}"


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text)


if __name__ == "__main__":
    sys.exit(main())
