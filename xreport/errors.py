"""Errors a user can act on. The CLI prints their message on one line and exits non-zero."""
from __future__ import annotations


class XReportError(Exception):
    """Base class: the message names the bad value, the file, and the valid choices."""

    exit_code = 2


class ConfigError(XReportError):
    """A config file or option is wrong (unknown key, wrong type, out of range)."""


class DataError(XReportError):
    """A data file, folder, manifest or image cannot be used."""


class CheckpointError(XReportError):
    """A checkpoint is missing, truncated, of another model, or unsafe."""


class RunError(XReportError):
    """A run folder is missing, locked, or its name is not allowed."""


class OfflineError(XReportError):
    """Something needs the network (weights, a data set) and the network is absent."""


class TrainingError(XReportError):
    """Training cannot go on (for example the loss became NaN)."""


class ReportError(XReportError):
    """A report cannot be assembled or rendered."""


class OutputError(XReportError):
    """A file cannot be written (disk full, read-only folder, a file where a folder should be)."""
