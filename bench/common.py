"""Helpers shared by the speed benchmarks: machine description, timing, data, JSON output.

The machine may be shared, so every benchmark interleaves the variants it compares in one
process, reports ratios, and records the load average around each measurement.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xreport import runs

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_flags() -> dict[str, Any]:
    """lscpu's model name and which of CPU_FLAGS (the ones that decide torch's kernels) the CPU
    has ({"lscpu": None} when lscpu is missing)."""
    import subprocess

    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"lscpu": None}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    return {"model_name": fields.get("Model name", "").strip(), "flags": {f: f in flags for f in CPU_FLAGS}}


def ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, CPU, RAM, library versions."""
    import torchvision

    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu_model(), "ram_gib": ram_gib(),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def command_line() -> str:
    """The exact command that produced a result, as it would be typed from the repo root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO))
    except ValueError:
        script_text = str(script)
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", script_text, *sys.argv[1:]])


@dataclass
class Measurement:
    """One timed call: wall and process-CPU seconds, items done, load averages around it."""

    seconds: float
    cpu_seconds: float
    items: int
    load_before: list[float]
    load_after: list[float]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3),
                "items": self.items, "per_s": round(self.rate, 2),
                "load_before": self.load_before, "load_after": self.load_after, **self.extra}


def measure(fn: Callable[[], int]) -> Measurement:
    """Time ``fn``, which returns how many items (images) it processed."""
    load_before = load_average()
    wall, cpu = time.perf_counter(), time.process_time()
    items = fn()
    return Measurement(seconds=time.perf_counter() - wall, cpu_seconds=time.process_time() - cpu,
                       items=items, load_before=load_before, load_after=load_average())


def interleaved(variants: dict[str, Callable[[], int]], *, rounds: int,
                log: Callable[[str], None] = print) -> dict[str, list[Measurement]]:
    """Run every variant once per round, in the same order, so a busy neighbour slows all alike."""
    out: dict[str, list[Measurement]] = {k: [] for k in variants}
    for r in range(rounds):
        for key, fn in variants.items():
            m = measure(fn)
            out[key].append(m)
            log(f"round {r + 1}/{rounds}  {key:<44} {m.rate:9.1f} /s  ({m.seconds:.1f} s, "
                f"load {m.load_before[0]:.2f}->{m.load_after[0]:.2f})")
    return out


def best_rate(ms: list[Measurement]) -> float:
    """The least disturbed round: on a shared machine, noise only ever slows a run down."""
    return max(m.rate for m in ms)


def median_rate(ms: list[Measurement]) -> float:
    return float(np.median([m.rate for m in ms]))


def summarize(results: dict[str, list[Measurement]]) -> dict[str, Any]:
    return {k: {"best_per_s": round(best_rate(ms), 2), "median_per_s": round(median_rate(ms), 2),
                "rounds": [m.as_dict() for m in ms]} for k, ms in results.items()}


def ratio(results: dict[str, list[Measurement]], a: str, b: str) -> float:
    return round(best_rate(results[a]) / best_rate(results[b]), 2)


def write_result(path: Path, *, benchmark: str, started_load: list[float],
                 body: dict[str, Any]) -> dict[str, Any]:
    result = {"benchmark": benchmark, "date": now(), "command": command_line(),
              "machine": machine(), "load_average_start": started_load,
              "load_average_end": load_average(), **body}
    runs.write_json(path, result)
    print(f"wrote {path}")
    return result


def find_pneumoniamnist() -> Path | None:
    """$XREPORT_DATA_DIR, else ../shared/data beside the repo."""
    for folder in (os.environ.get("XREPORT_DATA_DIR"), REPO.parent / "shared" / "data"):
        if folder and (Path(folder) / "pneumoniamnist.npz").is_file():
            return Path(folder) / "pneumoniamnist.npz"
    return None


def synthetic_npz(path: Path, *, n_train: int, n_val: int, n_test: int, size: int = 28,
                  seed: int = 0) -> Path:
    """A MedMNIST-layout .npz of random grey images and two classes (smoke runs: speed does
    not depend on the pixels)."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path


@dataclass
class ChildRun:
    """A child process's wall time, CPU time and peak resident memory (from wait4)."""

    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    returncode: int
    load_before: list[float]
    load_after: list[float]
    output_tail: str

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2),
                "peak_rss_mib": round(self.peak_rss_mib, 1), "load_before": self.load_before,
                "load_after": self.load_after}


def run_child(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> ChildRun:
    """Run ``argv`` and measure it alone: wait4 gives this child's own rusage (ru_maxrss)."""
    import subprocess
    import tempfile

    load_before = load_average()
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        tail = log.read()[-3000:]
    run = ChildRun(seconds=seconds, cpu_seconds=usage.ru_utime + usage.ru_stime,
                   peak_rss_mib=usage.ru_maxrss / 1024, returncode=proc.returncode,
                   load_before=load_before, load_after=load_average(), output_tail=tail)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with exit code {run.returncode}:\n{tail}")
    return run


def xreport_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "xreport", *args]


def train_tiny_run(data: Path, *, name: str, checkpoints: Path, max_steps: int, batch_size: int = 64,
                   image_size: int = 28) -> ChildRun:
    """A small real checkpoint (one epoch cut to ``max_steps``) to evaluate and build from."""
    return run_child(xreport_argv("train", "--dataset", str(data), "--name", name,
                                  "--image-size", str(image_size), "--epochs", "1",
                                  "--max-steps", str(max_steps), "--batch-size", str(batch_size),
                                  "--device", "cpu", "--checkpoints", str(checkpoints), "--overwrite"))
