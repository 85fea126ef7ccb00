"""Bounds on what an input may make xreport allocate, checked before the allocation.

An input declares sizes (an .npy header, DICOM rows x columns x frames, a checkpoint's
storages) that a forged or damaged file can set to terabytes. Each reader compares the
declared size with ``memory_budget()`` before reading, so the answer is one clear line
instead of a MemoryError, an OOM kill or minutes of swapping.
"""
from __future__ import annotations

import os

from .errors import DataError

# A classifier head, the per-class tables and the charts grow with the class count; a label
# of 10**9 (a typo, or an id column read as labels) would otherwise make a billion classes.
MAX_CLASSES = 1000

# What a report shows in full: per-class tables, the confusion table and charts, ROC/PR curves,
# the CAM gallery and the viewer cover every class up to this many; beyond it (up to
# MAX_CLASSES), the REPORT_CLASSES classes with the most test errors (then the most images)
# are shown and the report says so; metrics.json keeps every class's numbers.
REPORT_CLASSES = 20

# Bootstrap work grows with classes x resamples (per-class AUC and AP in every resample):
# above this product the resamples are reduced (never below MIN_RESAMPLES), and metrics.json
# records how many were drawn.
BOOTSTRAP_CLASS_RESAMPLES = 100_000
MIN_RESAMPLES = 100

# Share of physical memory one declared array (or a checkpoint's storages together) may take.
MEMORY_FRACTION = 0.5


def shown_classes(support: "list[int]", errors: "list[int]") -> list[int]:
    """The class indices a report shows in full (see REPORT_CLASSES), in class order: all of
    them up to REPORT_CLASSES, else those with the most errors, then the most images."""
    k = len(support)
    if k <= REPORT_CLASSES:
        return list(range(k))
    ranked = sorted(range(k), key=lambda c: (-errors[c], -support[c], c))
    return sorted(ranked[:REPORT_CLASSES])


def largest_classes(totals: "list[int]") -> list[int]:
    """Every class index up to REPORT_CLASSES, else the REPORT_CLASSES with the most images
    (in class order): what the data section's table and figures show."""
    k = len(totals)
    if k <= REPORT_CLASSES:
        return list(range(k))
    return sorted(sorted(range(k), key=lambda i: (-totals[i], i))[:REPORT_CLASSES])


def physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a modest machine
        return 8 * 2**30


def memory_budget() -> int:
    """Bytes one input may declare; ``XREPORT_MAX_INPUT_BYTES`` lowers (or raises) it."""
    configured = os.environ.get("XREPORT_MAX_INPUT_BYTES")
    if configured and configured.isdigit():
        return int(configured)
    return int(physical_memory() * MEMORY_FRACTION)


def human(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


def check_class_count(count: int, *, where: str, what: str) -> None:
    """``what`` (e.g. "the highest label, 999999") implies ``count`` classes: refuse more than
    MAX_CLASSES before anything is sized by it."""
    if count > MAX_CLASSES:
        raise DataError(f"{where}: {what} would make {count} classes; xreport supports at most "
                        f"{MAX_CLASSES} (labels 0..{MAX_CLASSES - 1})")
