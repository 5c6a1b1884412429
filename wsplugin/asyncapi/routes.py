"""``{prefix}-asyncapi.json`` (the AsyncAPI document) and ``{prefix}-docs`` (it as a page).

The document is built at the first request and cached until the room table changes (a
handler registered later); only the ``servers`` entry is filled per request. The page is
rendered on the server from a Jinja2 template with the package's own stylesheet: no script,
no CDN, a strict Content-Security-Policy. Every answer says ``X-Content-Type-Options:
nosniff``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from wsplugin.asyncapi.document import build_document, with_server
from wsplugin.asyncapi.frames import FRAMES

if TYPE_CHECKING:
    from wsplugin.config import Settings
    from wsplugin.manager import WebSocketManager

HERE = Path(__file__).parent
STYLESHEET = HERE / "static" / "asyncapi.css"
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
CSP = "; ".join(["default-src 'none'", "style-src 'self'", "img-src 'self'",
                 "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"])
PAGE_HEADERS = {**NOSNIFF, "Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                "Referrer-Policy": "same-origin", "Cache-Control": "no-cache"}

_templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                         autoescape=select_autoescape(default=True))


def asyncapi_path(settings: Settings) -> str | None:
    """Where the document is served: ``asyncapi_url`` with ``{prefix}`` replaced, or None."""
    url = settings.asyncapi_url
    return None if url is None else url.replace("{prefix}", settings.prefix)


def docs_path(settings: Settings) -> str:
    return f"{settings.prefix}-docs"


@functools.cache
def _stylesheet() -> tuple[bytes, str]:
    body = STYLESHEET.read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


class AsyncAPIDocs:
    """The routes' handlers and the cached document of one manager."""

    def __init__(self, manager: WebSocketManager, url: str) -> None:
        self.manager = manager
        self.url = url
        self._cached: tuple[int, dict[str, Any]] | None = None

    def document(self, request: Request) -> dict[str, Any]:
        """The document for the server this request reached."""
        table = self.manager.room_table
        if self._cached is None or self._cached[0] != table.version:
            app = request.app
            title = str(getattr(app, "title", "") or "wsplugin")
            version = str(getattr(app, "version", "") or "1.0.0")
            built = build_document(table.entries(), self.manager.settings.prefix, title, version)
            self._cached = (table.version, built)
        host = request.headers.get("host") or request.url.netloc
        secure = request.url.scheme in ("https", "wss")
        return with_server(self._cached[1], host, secure, request.scope.get("root_path", ""))

    async def json(self, request: Request) -> Response:
        return JSONResponse(self.document(request),
                            headers={**NOSNIFF, "Cache-Control": "no-cache"})

    async def page(self, request: Request) -> Response:
        document = self.document(request)
        html = _templates.get_template("docs.html").render(
            **page_context(document, self.manager.settings.prefix),
            json_url=request.scope.get("root_path", "") + self.url,
            stylesheet=self.manager.settings.prefix.rsplit("/", 1)[-1] + "-docs.css")
        return HTMLResponse(html, headers=PAGE_HEADERS)

    async def stylesheet(self, request: Request) -> Response:
        body, etag = _stylesheet()
        headers = {"ETag": etag, "Cache-Control": "no-cache", **NOSNIFF}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="text/css", headers=headers)


def page_context(document: dict[str, Any], prefix: str) -> dict[str, Any]:
    """What the page shows, from the document: the server, channels, operations, frames."""
    server = document["servers"]["default"]
    url = f"{server['protocol']}://{server['host']}{server.get('pathname', '')}{prefix}/{{room}}"
    channels = []
    for key, channel in document["channels"].items():
        typed = [{"title": message["title"], "schema": _pretty(message["payload"]),
                  "example": _pretty(message["examples"][0]["payload"])}
                 for message in channel["messages"].values() if "$ref" not in message]
        options = {k: v for k, v in channel["x-wsplugin-options"].items()
                   if k == "client_publish" or v not in (None, False)}
        channels.append({"key": key, "summary": channel["summary"].replace("`", ""),
                         "description": channel["description"],
                         "options": [(k, json.dumps(v)) for k, v in options.items()],
                         "examples": channel["parameters"]["room"].get("examples", []),
                         "typed": typed})
    frames = [{"key": f.key, "type": f.type, "direction": f.direction, "summary": f.summary,
               "replies": ", ".join(f.replies),
               "schema": _pretty(document["components"]["messages"][f.key]["payload"]),
               "example": _pretty(f.example)} for f in FRAMES]
    info = {**document["info"], "description": document["info"]["description"].replace("`", "")}
    return {"info": info, "url": url, "channels": channels, "frames": frames,
            "schemas": [(name, _pretty(schema))
                        for name, schema in document["components"]["schemas"].items()],
            "operations": len(document["operations"])}


def asyncapi_routes(manager: WebSocketManager) -> list[Route]:
    """The document, the page and its stylesheet; none with ``asyncapi_url=None``."""
    settings = manager.settings
    url = asyncapi_path(settings)
    if url is None:
        return []
    docs = AsyncAPIDocs(manager, url)
    page = docs_path(settings)
    return [
        Route(url, docs.json, methods=["GET"], name="wsplugin_asyncapi"),
        Route(page, docs.page, methods=["GET"], name="wsplugin_docs"),
        Route(f"{page}.css", docs.stylesheet, methods=["GET"], name="wsplugin_docs_css"),
    ]
