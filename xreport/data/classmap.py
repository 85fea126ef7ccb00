"""Matching class names between two sets (train folders vs test folders, a checkpoint's
classes vs a folder's): the one rule every caller uses.

A name is matched, in order, by ``data.class_map`` (old -> new, a TOML table), by itself,
by a case-insensitive equal name, or when one name is an unambiguous case-insensitive
prefix of the other (``glioma`` / ``glioma_tumor``). Anything else is a one-line error
naming both sets, so a renamed folder is never silently taken for another class.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..artifacts import ClassMatch
from ..errors import DataError


def renamed(names: Iterable[str], class_map: Mapping[str, str]) -> list[str]:
    """``names`` with ``class_map`` applied (the reference split's own renames)."""
    return [class_map.get(n, n) for n in names]


def check_class_map(class_map: Mapping[str, str], found: Iterable[str], *, where: str) -> None:
    """Every key of ``data.class_map`` must name a class folder that exists."""
    present = set(found)
    missing = sorted(k for k in class_map if k not in present)
    if missing:
        raise DataError(f"{where}: data.class_map names {', '.join(map(repr, missing))}, which is not a "
                        f"class folder here (found: {', '.join(sorted(present)) or 'none'})")


def match_class_names(reference: list[str], names: list[str], *, class_map: Mapping[str, str],
                      where: str, what: str) -> tuple[dict[str, str], list[ClassMatch]]:
    """Map each of ``names`` onto one of ``reference``.

    Returns (name -> reference name, the matches that were not identical, for the log and
    the report). ``what`` names the two sets in messages ("train has ...; test has ...").
    """
    def sets() -> str:
        return f"{what.split('|')[0]} has {', '.join(reference)}; {what.split('|')[1]} has {', '.join(names)}"

    lowered = {r.lower(): r for r in reference}
    out: dict[str, str] = {}
    notes: list[ClassMatch] = []
    unmatched: list[str] = []
    for name in names:
        if name in class_map:
            target = class_map[name]
            if target not in reference:
                raise DataError(f"{where}: data.class_map maps {name!r} to {target!r}, which is not a class "
                                f"({sets()})")
            out[name] = target
            if target != name:
                notes.append({"folder": name, "class": target, "rule": "class_map"})
            continue
        if name in reference:
            out[name] = name
            continue
        if name.lower() in lowered:
            out[name] = lowered[name.lower()]
            notes.append({"folder": name, "class": out[name], "rule": "case"})
            continue
        low = name.lower()
        candidates = [r for r in reference if r.lower().startswith(low) or low.startswith(r.lower())]
        if len(candidates) > 1:
            raise DataError(f"{where}: class folder {name!r} could be any of "
                            f"{', '.join(map(repr, candidates))}; set data.class_map ({sets()})")
        if candidates:
            out[name] = candidates[0]
            notes.append({"folder": name, "class": candidates[0], "rule": "prefix"})
        else:
            unmatched.append(name)
    if unmatched:
        raise DataError(f"{where}: class folders differ between splits: {sets()} "
                        f"(no match for {', '.join(map(repr, unmatched))}; map them with data.class_map)")
    taken: dict[str, list[str]] = {}
    for name, target in out.items():
        taken.setdefault(target, []).append(name)
    clash = next((t for t, ns in taken.items() if len(ns) > 1), None)
    if clash is not None:
        raise DataError(f"{where}: class folders {', '.join(map(repr, taken[clash]))} all match class "
                        f"{clash!r}; set data.class_map ({sets()})")
    return out, notes
