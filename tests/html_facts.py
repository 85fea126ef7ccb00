"""What the report tests read off rendered HTML: element ids, image sources, languages, scripts."""
from __future__ import annotations

from html.parser import HTMLParser


class HtmlFacts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.srcs: list[str] = []
        self.langs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "img":
            self.srcs.append(a.get("src") or "")
        if tag == "div" and a.get("lang"):
            self.langs.append(a["lang"])
        if tag == "script":
            self.scripts += 1

