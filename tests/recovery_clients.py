"""Recovering clients for ``tests/test_recovery.py``, in a process of their own, so that the
test process (the server's) measures the server's memory only.

    python -m tests.recovery_clients URL COUNT

Opens COUNT connections to URL (a history room with ``?epoch=&offset=``), each with a small
kernel receive buffer, and prints ``welcome <i> <frame>`` as each reply arrives. The clients
read nothing more until a line ``go <top>`` comes on stdin: meanwhile the server can only
queue. Then each reads until it saw offset ``top`` and prints ``result <i> <frames>``, the
frames after the reply as ``["m", offset]`` (message) or ``["r", offset]`` (reset), and
``["closed", code]`` if the server closed it first.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

RCVBUF = 4096


def emit(*parts: Any) -> None:
    print(*parts, flush=True)


class Frames:
    """The frames of one connection, one JSON object each (``?batch=1`` joins them with
    newlines)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.pending: list[str] = []

    async def next(self) -> dict[str, Any]:
        while not self.pending:
            raw = await self.ws.recv()
            self.pending = (raw if isinstance(raw, str) else raw.decode()).split("\n")
        frame: dict[str, Any] = json.loads(self.pending.pop(0))
        return frame


async def client(index: int, url: str, go: asyncio.Future[int]) -> None:
    where = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.connect((where.hostname or "127.0.0.1", where.port or 80))
    ws = await connect(url, sock=sock, max_queue=4, compression=None, open_timeout=60)
    frames = Frames(ws)
    emit("welcome", index, json.dumps(await frames.next()))
    top = await go
    emit("result", index, json.dumps(await frames_until(frames, top)))
    await ws.close()


async def frames_until(frames: Frames, top: int) -> list[tuple[str, int | None]]:
    seen: list[tuple[str, int | None]] = []
    try:
        while not seen or (seen[-1][1] or 0) < top:
            frame = await frames.next()
            if frame["type"] in ("message", "reset"):
                seen.append((frame["type"][0], frame["offset"]))
    except ConnectionClosed:
        seen.append(("closed", frames.ws.close_code))
    return seen


async def main(url: str, count: int) -> None:
    go: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    tasks = [asyncio.create_task(client(i, url, go)) for i in range(count)]
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    word, _, top = line.partition(" ")
    assert word == "go", line
    go.set_result(int(top))
    await asyncio.wait_for(asyncio.gather(*tasks), 60)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
