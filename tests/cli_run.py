"""Driving the real CLI in a subprocess, and reading its one error line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xreport", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("xreport: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]
