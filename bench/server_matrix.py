"""Measure the server compatibility table of ``docs/servers.md`` (not a CI test).

    scripts/server-matrix [--only hypercorn,granian]

For every server of ``tests/servers.py`` (a subprocess running ``tests/apps/servers_app.py``
with the memory backend, a real ``websockets`` client): whether connections take the fast
path, whether a kick's close reason arrives, the close code a client gets on SIGTERM and how
long the server takes to exit, whether the server sends protocol pings (ping interval 1 s),
how long SIGTERM takes with a client that stopped reading (100 x 64 KB queued for it; killed
after 40 s), how many of 8 clients a broadcast reaches, and whether the multi-worker WARNING
was logged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from tests.servers import (
    SERVERS,
    Server,
    closed_with,
    open_client,
    running,
    server_pings,
    shutdown_close,
    stalled_client,
)
from tests.ws_helpers import recv_type

WARNING = 'backend="redis://..."'


async def _on_this_worker(server: Server, path: str, tries: int = 20) -> Any:
    """GET/POST until the worker that owns the connection answers (several workers)."""
    answer: Any = None
    for _ in range(tries):
        answer = await asyncio.to_thread(server.get, path)
        if answer.get("found"):
            break
    return answer


async def contract(server: Server) -> dict[str, Any]:
    ws, conn_id = await open_client(server, "lobby")
    fast = await _on_this_worker(server, f"/fast/{conn_id}")
    kicked: Any = {}
    for _ in range(20):
        kicked = await asyncio.to_thread(server.post, f"/kick/{conn_id}?reason=bye%20now")
        if kicked["found"]:
            break
    code, reason = await closed_with(ws)
    return {"fast path": fast["fast"], "kick": f"{code} {reason!r}"}


async def reach(server: Server, clients: int = 8) -> str:
    sockets = [(await open_client(server, "all"))[0] for _ in range(clients)]
    await asyncio.to_thread(server.post, "/broadcast/all", {"n": 1})
    got = 0
    for ws in sockets:
        try:
            await recv_type(ws, "message", 1.0)
            got += 1
        except TimeoutError:
            pass
        await ws.close()
    return f"{got}/{clients}"


async def measure(name: str) -> dict[str, Any]:
    row: dict[str, Any] = {"server": name}
    with running(name, ping=1.0) as server:
        row.update(await contract(server))
        row["pings"] = await server_pings(server, 2.5)
        row["broadcast reach"] = await reach(server)
        code, _, exited = await shutdown_close(server)
        row["SIGTERM close"] = code
        row["exit s"] = round(exited, 1)
        row["warning"] = WARNING in server.log()
    with running(name) as server:
        sock = stalled_client(server, "flood")
        for _ in range(20):  # several workers: flood the one holding the stalled client
            if (await asyncio.to_thread(server.post, "/flood/flood?count=100"))["delivered"]:
                break
        await asyncio.sleep(0.3)
        row["stalled exit s"] = round(await asyncio.to_thread(server.terminate, 40.0), 1)
        sock.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(SERVERS))
    args = parser.parse_args()
    rows = [asyncio.run(measure(name)) for name in args.only.split(",")]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
