"""Rendering: a step of the move of render.py into a package (split by concern next)."""
from .sandbox import *  # noqa: F401,F403
from .sandbox import _catalog_paths, _globals_for  # noqa: F401
