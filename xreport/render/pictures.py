"""Pictures in the documents: ``data_uri`` (a file inside the scope as a data URI) and
``PictureStore``, which embeds each picture of report.html once however often it is shown.
"""
from __future__ import annotations

import base64
import hashlib
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Mapping, Sequence

from markupsafe import Markup

from ..errors import ReportError
from .sandbox import FileScope


def _mime(path: Path) -> str:
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
            ".svg": "image/svg+xml", ".gif": "image/gif"}.get(path.suffix.lower(),
                                                               "application/octet-stream")


def data_uri(path: Path, scope: FileScope | None = None, *, shown: str | None = None) -> str:
    """``path`` as a data URI; with ``scope``, only a file inside its folders."""
    if scope is not None:
        payload = scope.read_bytes(path, what="figure", shown=shown)
    else:
        try:
            payload = Path(path).read_bytes()
        except OSError as exc:
            raise ReportError(f"{path}: figure cannot be read ({exc.strerror})") from None
    return f"data:{_mime(Path(path))};base64,{base64.b64encode(payload).decode('ascii')}"


@dataclass
class PictureStore:
    """The pictures of one HTML file, by content: while the language bodies are rendered,
    ``img()`` hands out a placeholder per picture; :meth:`embed` then writes a picture that
    appears once as a data URI in its ``<img>``, and one that appears more than once (a CAM
    overlay shown in every language, the same chart in two languages) once, as an SVG
    ``<image>`` that each use draws with ``<use>``. So no picture is embedded twice."""

    payloads: dict[str, tuple[str, bytes]] = field(default_factory=dict)   # sha -> (mime, bytes)

    PREFIX: ClassVar[str] = "xr-pic:"

    def add(self, payload: bytes, mime: str) -> str:
        sha = hashlib.sha256(payload).hexdigest()
        self.payloads.setdefault(sha, (mime, payload))
        return self.PREFIX + sha

    def _uri(self, sha: str) -> str:
        mime, payload = self.payloads[sha]
        return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"

    def embed(self, bodies: Sequence[str]) -> tuple[list[Markup], Markup]:
        """The bodies with every placeholder resolved, and the shared pictures' definitions
        (an SVG of ``<image>`` elements to place once in the document)."""
        token = re.compile(re.escape(self.PREFIX) + r"([0-9a-f]{64})")
        tag = re.compile(r'<img\b[^>]*\bsrc="' + re.escape(self.PREFIX) + r'([0-9a-f]{64})"[^>]*>')
        uses = Counter(m[1] for body in bodies for m in token.finditer(body))
        sizes = {sha: _pixel_size(self.payloads[sha][1]) for sha, n in uses.items() if n > 1}
        shared = {sha: size for sha, size in sizes.items() if size is not None}   # sha -> (w, h)

        def picture(match: re.Match[str]) -> str:
            sha = match[1]
            if sha not in shared:
                return match[0].replace(self.PREFIX + sha, self._uri(sha))
            w, h = shared[sha]
            alt = re.search(r'\balt="([^"]*)"', match[0])
            label = f' aria-label="{alt[1]}"' if alt else ' aria-hidden="true"'
            return (f'<svg class="pic" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"'
                    f'{label}><use href="#xr-pic-{sha[:16]}"/></svg>')

        out = []
        for body in bodies:
            body = tag.sub(picture, body)
            # A placeholder outside an <img> (a user template's own use): its data URI.
            out.append(Markup(token.sub(lambda m: self._uri(m[1]), body)))
        defs = "".join(f'<image id="xr-pic-{sha[:16]}" width="{shared[sha][0]}" '
                       f'height="{shared[sha][1]}" href="{self._uri(sha)}"/>' for sha in sorted(shared))
        holder = (f'<svg class="pic-defs" width="0" height="0" aria-hidden="true" focusable="false">'
                  f'<defs>{defs}</defs></svg>') if shared else ""
        return out, Markup(holder)


def _pixel_size(payload: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG, JPEG or GIF in pixels, None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload)) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def image_source(report_dir: Path, scope: FileScope, *, mode: str,
                  store: PictureStore | None = None) -> Callable[[object, str], str]:
    """``img(ref, lang)``: a figure ref (a path, or {lang: path}) -> a data or file URI (or,
    with a ``store``, its placeholder there). Relative refs are under the report folder;
    every ref must resolve inside ``scope``."""
    def img(ref: object, lang: str = "en") -> str:
        if isinstance(ref, Mapping):
            ref = ref.get(lang) or ref.get("en") or next(iter(ref.values()))
        if not isinstance(ref, (str, Path)):
            raise ReportError(f"img(): expected a file name, got {type(ref).__name__}")
        path = Path(ref)
        if not path.is_absolute():
            path = report_dir / path
        if mode == "file":
            return scope.resolve(path, what="figure", shown=str(ref)).as_uri()
        if store is not None:
            return store.add(scope.read_bytes(path, what="figure", shown=str(ref)), _mime(path))
        return data_uri(path, scope, shown=str(ref))
    return img
