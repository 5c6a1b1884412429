"""Reference: the ``websockets`` library's own asyncio server and ``websockets.broadcast()``.

No ASGI, no framework: the pure-Python limit. Minimal protocol: a client connects to
``/ws/{room}``; every text frame a client sends is relayed as is to every member of the
room (the sender included), like the naive manager.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import uvloop
import websockets
from websockets.asyncio.server import ServerConnection, serve

from bench.servers._common import listen_socket, memory_probe, parser, raise_fd_limit

ROOMS: dict[str, set[ServerConnection]] = {}


def room_of(ws: ServerConnection) -> str:
    path = ws.request.path if ws.request is not None else "/"
    return path.split("?", 1)[0].rsplit("/", 1)[-1]


async def handler(ws: ServerConnection) -> None:
    members = ROOMS.setdefault(room_of(ws), set())
    members.add(ws)
    try:
        async for message in ws:
            websockets.broadcast(members, message)
    except websockets.ConnectionClosed:
        pass  # the load generator drops its connections without a close handshake
    finally:
        members.discard(ws)


async def main(host: str, port: int, sndbuf: int) -> None:
    memory_probe(asyncio.get_running_loop())
    sock = listen_socket(host, port, sndbuf)
    async with serve(handler, sock=sock, max_size=2**20) as server:
        await server.serve_forever()


if __name__ == "__main__":
    args = parser(__doc__ or "").parse_args()
    raise_fd_limit()
    uvloop.run(main(args.host, args.port, args.sndbuf))
