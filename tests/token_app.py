"""The app the browser client's token tests run in a uvicorn subprocess
(``tests.token_app:app``).

``JWTAuth`` with HS256; ``POST /token`` mints a token, as an app's login service would (the
page's ``getToken`` calls it): ``sub``, ``ttl`` seconds, optional ``rooms`` globs, and
``bad`` (signed with another secret: ``bad signature``). History rooms ``h-*``, client
publishing on; ``POST /publish/{room}`` publishes as the server, ``GET /connections`` lists
the connections (id, rooms, token expiry). ``refresh_grace`` and the backend come from the
environment (``WSPLUGIN_REFRESH_GRACE``, ``WSPLUGIN_BACKEND``).
"""

from __future__ import annotations

import time
from typing import Any

import jwt
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from tests.client_app import PAGE
from wsplugin import History, JWTAuth, install_ws_manager

SECRET = "the-token-app-secret-of-at-least-32-bytes"
OTHER_SECRET = "not-the-secret-the-server-verifies-with!!"


class Mint(BaseModel):
    sub: str = "ann"
    ttl: float = 3.0
    rooms: list[str] | None = None
    bad: bool = False


app = FastAPI()
manager = install_ws_manager(
    app,
    authenticate=JWTAuth(key=SECRET, algorithms=["HS256"]),
    client_publish=True,
    history={"h-*": History(size=100, ttl=300)},
)


@app.get("/page")
async def page() -> Response:
    return Response(PAGE, media_type="text/html")


@app.get("/favicon.ico")
async def favicon() -> Response:  # no 404 on the console
    return Response(status_code=204)


@app.post("/token")
async def token(mint: Mint) -> JSONResponse:
    claims: dict[str, Any] = {"sub": mint.sub, "exp": time.time() + mint.ttl}
    if mint.rooms is not None:
        claims["rooms"] = mint.rooms
    signed = jwt.encode(claims, OTHER_SECRET if mint.bad else SECRET, algorithm="HS256")
    return JSONResponse({"token": signed}, headers={"Cache-Control": "no-store"})


@app.post("/publish/{room}")
async def publish(room: str, data: dict[str, Any]) -> dict[str, bool]:
    await manager.publish(room, data)
    return {"ok": True}


@app.get("/connections")
async def connections() -> list[dict[str, Any]]:
    return [{"id": info.id, "rooms": list(info.rooms), "expires_at": info.expires_at}
            for info in await manager.connections()]
