"""xreport: train medical-image classifiers and turn a checkpoint into a lab report.

The Python API is ``xreport.api`` (``train``, ``evaluate``, ``build``, ``open_run``)::

    from xreport import api as xr
    report = xr.build(xr.train("configs/x.toml"))

It is imported on first use, so ``import xreport`` stays light (no torch). The verbs are
not re-exported here: ``xreport.train``, ``xreport.evaluate`` and ``xreport.build`` are the
stage modules, and a function of the same name would be replaced by the module the first
time the module is imported.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

_API = ("open_run", "Run", "Report", "Evaluated")
__all__ = ["__version__", "api", *_API]

if TYPE_CHECKING:
    from . import api
    from .api import Evaluated, Report, Run, open_run


def __getattr__(name: str) -> object:
    if name == "api" or name in _API:
        import importlib

        module = importlib.import_module(".api", __name__)
        return module if name == "api" else getattr(module, name)
    raise AttributeError(f"module 'xreport' has no attribute {name!r}")
