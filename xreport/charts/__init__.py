"""Charts: a step of the move of charts.py into a package (split by concern next)."""
from .style import *  # noqa: F401,F403
from .style import _fmt, _installed_cjk, _lit  # noqa: F401
