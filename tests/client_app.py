"""The app the browser client's tests run in a uvicorn subprocess (``tests.client_app:app``).

History rooms ``h-*``, client publishing on, rooms ``no-*`` refused at the handshake, a blank
page that imports the served client, and ``POST /kick/{room}`` to kick a room's members.
The backend and the Redis prefix come from ``WSPLUGIN_BACKEND``/``WSPLUGIN_REDIS_PREFIX``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from wsplugin import History, WSManager, install_ws_manager

PAGE = """<!doctype html><meta charset="utf-8"><title>client test</title>
<script type="module">
import * as wsplugin from "/ws-client.js";
window.wsplugin = wsplugin;
window.ready = true;
</script>"""


def authorize(identity: object, room: str) -> bool:
    return not room.startswith("no-")


app = FastAPI()
install_ws_manager(
    app,
    client_publish=True,
    authorize=authorize,
    history={"h-*": History(size=100, ttl=300)},
)


@app.get("/page")
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE)


@app.post("/kick/{room}")
async def kick(room: str, manager: WSManager, reason: str = "") -> dict[str, int]:
    kicked = 0
    for info in await manager.connections(room):
        kicked += await manager.kick(info.id, reason=reason)
    return {"kicked": kicked}
