"""Hold ``n`` idle websocket clients open, in a process of their own (for memory tests).

    python -m tests.idle_clients ws://127.0.0.1:8000/ws/room 500 [--deflate] [--raw]
    python -m tests.idle_clients "ws://127.0.0.1:8000/ws/room{n:02d}" 60   # one room each

Each client sends a handshake (with Chromium's ``permessage-deflate`` offer when asked),
reads the ``101`` answer and, unless ``--raw``, the first frame (wsplugin's ``welcome``).
Prints ``ready <n>`` once all are open, then holds them until stdin closes. Plain sockets,
nothing else: a test that traces the server's allocations counts none of the clients'.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
from urllib.parse import urlsplit

OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


async def open_one(url: str, deflate: bool, raw: bool) -> asyncio.StreamWriter:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16)).decode()
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    writer.write((f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n{OFFER if deflate else ''}\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.decode(errors="replace"))
    if not raw:
        first = await reader.readexactly(2)
        size = first[1] & 0x7F
        if size == 126:
            size = int.from_bytes(await reader.readexactly(2), "big")
        await reader.readexactly(size)
    return writer


async def main(url: str, n: int, deflate: bool, raw: bool) -> None:
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> asyncio.StreamWriter:
        async with gate:
            return await open_one(url.format(n=i) if "{n" in url else url, deflate, raw)

    writers = await asyncio.gather(*(one(i) for i in range(n)))
    print(f"ready {len(writers)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for writer in writers:
        writer.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("n", type=int)
    p.add_argument("--deflate", action="store_true")
    p.add_argument("--raw", action="store_true", help="no first frame to wait for")
    args = p.parse_args()
    asyncio.run(main(args.url, args.n, args.deflate, args.raw))
