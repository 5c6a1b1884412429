"""The dashboard's static files, answered from memory.

They are a few kilobytes each, read once. A ``FileResponse`` would read the file in a
worker thread on every request (and start that thread pool the first time, a pause of the
event loop of ~20 ms in a process holding 20,000 connections). Revalidation works as with
a file: an ``ETag`` (the content's hash) and ``Last-Modified`` (the file's time), ``304``
when the browser's copy is current.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.utils import formatdate
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

STATIC = Path(__file__).parent / "static"
JS = "text/javascript"
STATIC_FILES = {"admin.js": JS, "login.js": JS, "admin.css": "text/css"}
STATIC_FILES.update({"charts.js": JS, "charts.css": "text/css"})


@dataclass(frozen=True)
class Asset:
    content: bytes
    media_type: str
    etag: str
    last_modified: str

    def answer(self, request: Request) -> Response:
        """200 with the content (headers only for HEAD), or 304 if the browser has it."""
        headers = {"Cache-Control": "no-cache", "ETag": self.etag,
                   "Last-Modified": self.last_modified}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(self.content))
            return Response(b"", media_type=self.media_type, headers=headers)
        return Response(self.content, media_type=self.media_type, headers=headers)


@cache
def asset(name: str) -> Asset | None:
    """The static file ``name``, read once; ``None`` if the package has none by that name."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return None
    path = STATIC / name
    content = path.read_bytes()
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    return Asset(content, media_type, etag, formatdate(path.stat().st_mtime, usegmt=True))
