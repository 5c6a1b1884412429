"""The browser client, served by the plugin: ``{prefix}-client.js`` and its ``.d.ts``.

``static/wsplugin.js`` is a dependency-free ES module (see docs/client.md). Both files are
read once, sent with a strong ``ETag`` and ``Cache-Control: no-cache`` (a browser revalidates
each load and gets ``304 Not Modified`` until wsplugin is upgraded), so a deploy never leaves
a page on an old client. Every answer says ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

STATIC = Path(__file__).parent / "static"
SCRIPT = "wsplugin.js"
TYPES = "wsplugin.d.ts"
NOSNIFF = {"X-Content-Type-Options": "nosniff"}
"""On every answer, 304 too: a browser never runs these files as anything but their type."""


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    body = (STATIC / name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _responder(
    name: str, media_type: str, extra: dict[str, str]
) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        body, etag = _asset(name)
        headers = {"ETag": etag, "Cache-Control": "no-cache", **NOSNIFF, **extra}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    return serve


def client_routes(prefix: str) -> list[Route]:
    """``GET {prefix}-client.js`` and ``GET {prefix}-client.d.ts`` (HEAD too)."""
    script, types = f"{prefix}-client.js", f"{prefix}-client.d.ts"
    return [
        Route(script, _responder(SCRIPT, "text/javascript", {"X-TypeScript-Types": types}),
              methods=["GET"], name="wsplugin_client"),
        Route(types, _responder(TYPES, "application/typescript", {}),
              methods=["GET"], name="wsplugin_client_types"),
    ]
