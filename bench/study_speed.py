"""A study of three runs (`xreport build --runs A B C`) rendered from cached evaluations.

1. Trains three small checkpoints on PneumoniaMNIST (28 px; one epoch cut to --train-steps
   steps): resnet_tiny, resnet18 with the small-input stem, resnet18 with the standard stem
   (--one-model, and --smoke: the first one only, copied as the other two).
2. A first (cold) study build evaluates each run on the 624 test images, with CAMs.
3. The timed part: the same study again, every evaluation cached, HTML + an English and a
   Traditional Chinese PDF, --rounds times. Target: at most 60 s on 2 cores.

    .venv/bin/python bench/study_speed.py [--rounds 2] [--smoke]

Without pneumoniamnist.npz a random-image .npz with the same 624-image test split is used
(the render's cost does not depend on the pixels).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import common

RESULTS = common.RESULTS_DIR / "study_speed.json"
TARGET_S = 60.0
RUNS = (("s_tiny", "resnet_tiny", "on"), ("s_r18small", "resnet18", "on"), ("s_r18std", "resnet18", "off"))


def copy_run(checkpoints: Path, source: str, name: str) -> None:
    """Another run folder holding the same checkpoint (``--one-model``: the render's cost is
    the same, the machine is spared two trainings)."""
    shutil.copytree(checkpoints / source, checkpoints / name)
    config = checkpoints / name / "config.toml"
    config.write_text(config.read_text(encoding="utf-8").replace(f'name = "{source}"', f'name = "{name}"'),
                      encoding="utf-8")


def train(data: Path, checkpoints: Path, *, steps: int, one_model: bool) -> dict[str, float]:
    seconds = {}
    for i, (name, arch, stem) in enumerate(RUNS):
        if one_model and i > 0:
            copy_run(checkpoints, RUNS[0][0], name)
            continue
        config = checkpoints.parent / f"{name}.toml"
        config.write_text(f'name = "{name}"\nimage_size = 28\n[data]\ndataset = "{data}"\n'
                          f'[model]\narch = "{arch}"\nsmall_input_stem = "{stem}"\n'
                          f'[train]\nepochs = 1\nmax_steps = {steps}\nbatch_size = 64\ndevice = "cpu"\n',
                          encoding="utf-8")
        child = common.run_child(common.xreport_argv("train", "--config", str(config), "--checkpoints",
                                                     str(checkpoints), "--overwrite"))
        if child.returncode != 0:
            raise SystemExit(f"training {name} failed:\n{child.output_tail}")
        seconds[name] = round(child.seconds, 2)
        print(f"trained {name} ({arch}, stem {stem}) in {child.seconds:.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a MedMNIST .npz (default: pneumoniamnist.npz)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one-model", action="store_true",
                        help="train only the first run (resnet_tiny) and copy it as the other two")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long check: 40 random test images, HTML and the English PDF")
    args = parser.parse_args()
    started = common.load_average()
    langs, formats = "en,zh-TW", "html,pdf"
    with tempfile.TemporaryDirectory(prefix="xreport-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data = args.data or common.find_pneumoniamnist()
        if args.smoke:
            data = common.synthetic_npz(tmp / "smoke.npz", n_train=32, n_val=24, n_test=40)
            args.rounds, args.train_steps, langs, args.one_model = 1, 1, "en", True
        elif data is None:
            data = common.synthetic_npz(tmp / "random624.npz", n_train=256, n_val=64, n_test=624)
        (tmp / "ck").mkdir()
        trained = train(data, tmp / "ck", steps=args.train_steps, one_model=args.one_model)
        argv = common.xreport_argv("build", "--runs", *(r[0] for r in RUNS), "--name", "study",
                                   "--lang", langs, "--format", formats, "--device", "cpu",
                                   "--checkpoints", str(tmp / "ck"), "--reports", str(tmp / "rep"))
        cold = common.run_child(argv)
        if cold.returncode != 0:
            raise SystemExit(f"the cold study build failed:\n{cold.output_tail}")
        print(f"cold study build (evaluates the three runs, with CAMs) {cold.seconds:.1f} s", flush=True)
        rounds = []
        for r in range(args.rounds):
            child = common.run_child(argv)
            if child.returncode != 0:
                raise SystemExit(f"the cached study build failed:\n{child.output_tail}")
            rounds.append(child.as_dict())
            print(f"round {r + 1}/{args.rounds}  cached study build {child.seconds:6.1f} s  "
                  f"peak RSS {child.peak_rss_mib:6.0f} MiB  load {child.load_before[0]:.1f}", flush=True)
        summary = json.loads((tmp / "rep" / "study" / "study.json").read_text(encoding="utf-8"))
        n_test = summary["runs"][0]["n"]
        files = sorted(p.name for p in (tmp / "rep" / "study").iterdir() if p.is_file())
    best = min(r["seconds"] for r in rounds)
    body = {"setup": {"data": str(data), "test_images": n_test, "runs": [list(r) for r in RUNS],
                      "one_model": args.one_model,
                      "langs": langs, "formats": formats, "train_steps": args.train_steps,
                      "train_seconds": trained, "rounds": args.rounds},
            "command": " ".join(["xreport", *argv[3:]]).replace(tmp_name, "$TMP"),
            "cold_seconds": round(cold.seconds, 2), "cached": {"best_seconds": round(best, 2), "rounds": rounds},
            "files": files, "target_seconds": TARGET_S, "meets_target": best <= TARGET_S,
            "smoke": args.smoke}
    # write_result's own "command" is this script's command line (kept); the study's is above
    result = common.write_result(args.out, benchmark="study_speed", started_load=started,
                                 body={k: v for k, v in body.items() if k != "command"}
                                 | {"study_command": body["command"]})
    print(json.dumps({"cold_s": result["cold_seconds"], "cached_best_s": result["cached"]["best_seconds"],
                      "meets_target": result["meets_target"]}))


if __name__ == "__main__":
    main()
