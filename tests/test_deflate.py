"""Shared permessage-deflate: real clients inflate every frame, whatever the interleaving.

The ``websockets`` client keeps context takeover (its inflater's window holds every message
it inflated), so a frame whose back-references assume another history fails to inflate
(the client closes with 1007/1002) or inflates to the wrong text: every test checks every
message's content, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import string
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode

from tests.support import ThreadServer
from tests.ws_helpers import (
    UVICORN_WS,
    make_app,
    on_server,
    open_client,
    recv_json,
    send_json,
    serve,
    uvicorn_ws,
    wait_until,
)
from wsplugin import WebSocketManager
from wsplugin.config import build_settings
from wsplugin.delivery import deflate as _deflate
from wsplugin.delivery.uvicorn_writer import UvicornWriter

__all__ = ["uvicorn_ws"]  # the fixture

SIZES = (1, 63, 64, 100, 125, 126, 1000, 4095, 4096, 65535, 65536, 70000, 200000)
ECHO: dict[str, Any] = {"on_message": lambda conn, room, data: data}  # client publishing allowed


def window(bits: int) -> ClientPerMessageDeflateFactory:
    """A client offering permessage-deflate with ``server_max_window_bits=bits``."""
    return ClientPerMessageDeflateFactory(server_max_window_bits=bits)


def payloads(seed: int = 7) -> Iterator[str | bytes]:
    """Text and binary, repetitive and random, from 1 byte to above 64 KB."""
    rng = random.Random(seed)
    letters = string.ascii_letters + "éü€"
    for size in SIZES:
        yield ("wsplugin " * (size // 9 + 1))[:size]
        yield "".join(rng.choices(letters, k=size))
        yield bytes(range(256)) * (size // 256) + bytes(size % 256)
        yield rng.randbytes(size)


class Spy:
    """Records the RSV1 bit of every data frame the client's inflater is handed."""

    def __init__(self, ws: ClientConnection) -> None:
        self.rsv1: list[bool] = []
        extensions = ws.protocol.extensions
        assert len(extensions) == 1, extensions
        extension: Any = extensions[0]
        original = extension.decode

        def decode(frame: Frame, *, max_size: int | None = None) -> Frame:
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                self.rsv1.append(frame.rsv1)
            return original(frame, max_size=max_size)  # type: ignore[no-any-return]

        extension.decode = decode


async def expect_data(ws: ClientConnection, data: str | bytes) -> None:
    """The next frame is the broadcast of ``data`` (bytes as is, text in an envelope)."""
    got = await asyncio.wait_for(ws.recv(), 10)
    if isinstance(data, bytes):
        assert got == data
    else:
        assert isinstance(got, str) and json.loads(got)["data"] == data


def writer_key(manager: WebSocketManager, conn_id: str) -> str:
    writer = manager.hub.connections[conn_id].frames
    assert isinstance(writer, UvicornWriter)
    return writer.frame_key


# ---------------------------------------------------------------- frames
@pytest.mark.parametrize("bits", [9, 10, 12, 15])
def test_a_shared_frame_inflates_in_any_context(bits: int) -> None:
    """Into an inflater that already holds other messages (context takeover), as RFC 7692
    allows: the frame references nothing before itself."""
    history = zlib.compressobj(6, zlib.DEFLATED, -bits)
    inflater = zlib.decompressobj(-bits)
    for text in ("first message " * 50, "second, different " * 80):
        deflated = history.compress(text.encode()) + history.flush(zlib.Z_SYNC_FLUSH)
        assert inflater.decompress(deflated) == text.encode()
    for data in payloads():
        message: dict[str, Any] = ({"type": "websocket.send", "text": data}
                                   if isinstance(data, str)
                                   else {"type": "websocket.send", "bytes": data})
        frame = _deflate.deflate_frame(message, bits)
        assert message[f"{_deflate.FRAME_KEY_PREFIX}{bits}"] is frame  # cached: built once
        payload = data.encode() if isinstance(data, str) else data
        first, length = frame[0], frame[1] & 0x7F
        start = 2 if length < 126 else 4 if length == 126 else 10
        body = frame[start:]
        assert first & 0x0F == (1 if isinstance(data, str) else 2) and first & 0x80
        if first & 0x40:  # compressed: only when it saves bytes
            assert len(payload) >= _deflate.MIN_SIZE and len(body) < len(payload)
            assert inflater.decompress(body + b"\x00\x00\xff\xff") == payload
        else:
            assert body == payload


# ---------------------------------------------------------------- real clients
async def test_every_window_size_and_plain_clients_get_every_message(uvicorn_ws: str) -> None:
    with serve(ws=uvicorn_ws, **ECHO) as (server, manager):
        clients = [await open_client(server, "r") for _ in range(10)]  # uvicorn's bits
        clients += [await open_client(server, "r", extensions=[window(bits)])
                    for bits in (9, 10, 10, 11)]
        clients += [await open_client(server, "r", compression=None) for _ in range(5)]
        keys = [writer_key(manager, conn_id) for _, conn_id in clients]
        assert keys[:10] == [f"{_deflate.FRAME_KEY_PREFIX}{UVICORN_WS[uvicorn_ws]}"] * 10
        assert keys[10:14] == [f"{_deflate.FRAME_KEY_PREFIX}{b}" for b in (9, 10, 10, 11)]
        spies = [Spy(client) for client, _ in clients[:14]]
        sent = list(payloads())
        for data in sent:
            await on_server(server, manager.broadcast("r", data))
        for client, _ in clients:
            for data in sent:
                await expect_data(client, data)
        for spy in spies:
            assert len(spy.rsv1) == len(sent)
            assert sum(spy.rsv1) >= len(SIZES) * 2  # the repetitive ones at least
        for client, _ in clients:
            await client.close()
        assert manager.counters.dropped == 0


async def test_replies_errors_publishes_and_broadcasts_interleave(uvicorn_ws: str) -> None:
    rng = random.Random(3)
    with serve(ws=uvicorn_ws, **ECHO) as (server, manager):
        ws, _ = await open_client(server, "r", extensions=[window(10)])
        spy = Spy(ws)
        texts = [d for d in payloads() if isinstance(d, str) and len(d) <= 60000]
        for step in range(120):
            data = rng.choice(texts)
            kind = step % 5
            if kind == 0:
                await send_json(ws, {"type": "ping", "id": step})
                assert (await recv_json(ws))["type"] == "pong"
            elif kind == 1:
                await send_json(ws, {"type": "nope", "id": step, "pad": data})
                assert (await recv_json(ws))["type"] == "error"
            elif kind == 2:
                await send_json(ws, {"type": "publish", "data": data})
                await expect_data(ws, data)
            elif kind == 3:
                await send_json(ws, {"type": "join", "room": f"x{step}", "id": step})
                assert (await recv_json(ws))["room"] == f"x{step}"
            else:
                await on_server(server, manager.broadcast("r", data))
                await expect_data(ws, data)
        assert any(spy.rsv1)
        await ws.close()


def server_extension(manager: WebSocketManager, conn_id: str) -> Any:
    """uvicorn's negotiated permessage-deflate object of a fast-path connection."""
    writer = manager.hub.connections[conn_id].frames
    assert isinstance(writer, UvicornWriter)
    (extension,) = writer.flavour.extensions(writer.state)
    return extension


def deflate_state(extension: Any) -> dict[str, bool]:
    """Which zlib objects the connection holds: the compressor for what the server sends,
    the inflater for what the client sends."""
    if isinstance(extension, _deflate.WEBSOCKETS.deflate or ()):
        return {"compressor": getattr(extension, "encoder", None) is not None,
                "inflater": getattr(extension, "decoder", None) is not None}
    return {"compressor": extension._compressor is not None,
            "inflater": extension._decompressor is not None}


async def test_an_idle_compressed_connection_holds_no_deflate_state(uvicorn_ws: str) -> None:
    """uvicorn's compressor (~39 KB with websockets-sansio) is dropped when the connection
    takes the shared frames; under websockets-sansio the client is answered
    ``client_no_context_takeover``, so no inflater outlives a client's message either,
    and the client's compressed publishes (similar texts, each compressed on its own)
    still arrive intact."""
    with serve(ws=uvicorn_ws, **ECHO) as (server, manager):
        ws, conn_id = await open_client(server, "r")
        extension = server_extension(manager, conn_id)
        assert deflate_state(extension) == {"compressor": False, "inflater": False}
        assert ws.response is not None
        answer = ws.response.headers["Sec-WebSocket-Extensions"]
        sansio = uvicorn_ws == "websockets-sansio"
        assert ("client_no_context_takeover" in answer) is sansio
        rng = random.Random(2)
        for n in range(40):
            data = f"message {n}: " + "".join(rng.choices("ab", k=200)) * 3
            await send_json(ws, {"type": "publish", "data": data})
            await expect_data(ws, data)
        # wsproto keeps the client's inflater (its answer cannot be changed in time)
        assert deflate_state(extension) == {"compressor": False, "inflater": not sansio}
        await ws.close()


async def test_compression_false_drops_uvicorns_compressor_too(uvicorn_ws: str) -> None:
    with serve(ws=uvicorn_ws, compression=False, **ECHO) as (server, manager):
        ws, conn_id = await open_client(server, "r")
        assert deflate_state(server_extension(manager, conn_id))["compressor"] is False
        await ws.close()


def direct_send_app() -> tuple[Any, WebSocketManager]:
    """A user route whose code calls ``websocket.send_text`` itself (uvicorn compresses
    those) beside the manager's broadcasts (the shared frames)."""
    app, manager = make_app(**ECHO)

    @app.websocket("/own")
    async def own(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("before connect " * 20)  # uvicorn, context takeover on
        async with manager.connect(websocket, rooms=["r"]) as conn:
            async for text in conn:
                await websocket.send_text(str(text))

    return app, manager


async def direct_and_shared(server: ThreadServer, manager: WebSocketManager,
                            ws: ClientConnection, rounds: int) -> None:
    """Direct (uvicorn-compressed) and shared frames, alternating; same-length texts, so
    a back-reference into the wrong history lands inside another message's text."""
    rng = random.Random(5)
    for _ in range(rounds):
        a = "".join(rng.choices(string.ascii_letters, k=300))
        b = "".join(rng.choices(string.ascii_letters, k=300))
        for text, direct in ((a, True), (b, False), (a, True), (a, False), (b, True)):
            if direct:
                await ws.send(text)
                assert await asyncio.wait_for(ws.recv(), 10) == text
            else:
                await on_server(server, manager.broadcast("r", text))
                await expect_data(ws, text)


async def user_route_client(server: ThreadServer, manager: WebSocketManager) -> ClientConnection:
    ws = await connect(f"{server.ws_url}/own")
    assert await asyncio.wait_for(ws.recv(), 10) == "before connect " * 20

    async def joined() -> bool:
        return bool(manager.hub.rooms.get("r"))

    await wait_until(joined, what="the user route to join")
    return ws


async def test_direct_sends_in_a_user_route_interleave_with_shared_frames(
    uvicorn_ws: str,
) -> None:
    app, manager = direct_send_app()
    with ThreadServer(app, ws=uvicorn_ws) as server:
        ws = await user_route_client(server, manager)
        spy = Spy(ws)
        await direct_and_shared(server, manager, ws, rounds=20)
        assert spy.rsv1.count(True) == len(spy.rsv1) == 100  # all compressed, both kinds
        (conn_id,) = manager.hub.connections
        assert writer_key(manager, conn_id).startswith(_deflate.FRAME_KEY_PREFIX)
        await ws.close()


async def test_without_the_switch_uvicorns_frames_would_not_inflate(
    monkeypatch: pytest.MonkeyPatch, uvicorn_ws: str,
) -> None:
    """The catch is real: with uvicorn's compressor left on context takeover, its next
    frame after a shared one points into the wrong history."""
    monkeypatch.setattr(_deflate.Library, "share",
                        lambda self, extension, bits: _deflate.encoder(bits))
    app, manager = direct_send_app()
    with ThreadServer(app, ws=uvicorn_ws) as server:
        ws = await user_route_client(server, manager)
        # garbage (the inflated text holds pieces of a broadcast) or an inflate error
        with pytest.raises((AssertionError, ConnectionClosed)):
            await direct_and_shared(server, manager, ws, rounds=3)
        await ws.close()


async def test_a_paused_connection_inflates_everything_in_order(uvicorn_ws: str) -> None:
    rng = random.Random(11)
    with serve(sndbuf=16384, ws=uvicorn_ws, max_queue_messages=5000,
               max_queue_bytes=64 * 2**20, **ECHO) as (server, manager):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        ws = await connect(f"{server.ws_url}/ws/r", sock=sock, max_queue=4)
        welcome = await recv_json(ws)
        conn = manager.hub.connections[welcome["connection_id"]]
        assert writer_key(manager, conn.id).startswith(_deflate.FRAME_KEY_PREFIX)
        spy = Spy(ws)
        sent = ["".join(rng.choices(string.ascii_letters, k=2000)) for _ in range(300)]
        depth = 0
        for text in sent:  # ~450 KB compressed: far more than the socket buffers hold
            await on_server(server, manager.broadcast("r", text))
            depth = max(depth, conn.queue_depth)
        assert depth > 0  # the client is not reading: the rest waited in the queue
        for text in sent:
            await expect_data(ws, text)
        await send_json(ws, {"type": "publish", "data": sent[0]})  # and fast again
        await expect_data(ws, sent[0])
        assert spy.rsv1 == [True] * 301  # the queued ones too: the shared frames, later
        assert conn.dropped == 0
        await ws.close()


async def test_compression_false_sends_plain_frames_to_compressed_connections(
    uvicorn_ws: str,
) -> None:
    with serve(ws=uvicorn_ws, compression=False, **ECHO) as (server, manager):
        ws, conn_id = await open_client(server, "r")
        assert writer_key(manager, conn_id) == "wsplugin.frame"
        spy = Spy(ws)
        for data in payloads():
            await on_server(server, manager.broadcast("r", data))
            await expect_data(ws, data)
        assert spy.rsv1 and not any(spy.rsv1)
        await ws.close()


@pytest.mark.parametrize(("raw", "expected"), [("auto", "auto"), ("false", False),
                                               ("true", True)])
def test_compression_from_the_environment(raw: str, expected: Any) -> None:
    assert build_settings({}, env={"WSPLUGIN_COMPRESSION": raw}).compression == expected


def test_compression_is_validated() -> None:
    with pytest.raises(ValueError, match="compression"):
        build_settings({"compression": "gzip"}, env={})
    with pytest.raises(ValueError, match="WSPLUGIN_COMPRESSION"):
        build_settings({}, env={"WSPLUGIN_COMPRESSION": "maybe"})


# ---------------------------------------------------------------- a real browser
CHROMIUM = "/usr/bin/chromium"
FNV_OFFSET, FNV_PRIME = 2166136261, 16777619

CHECKER = """
window.fnv = (values) => {
  let h = 2166136261;
  for (const v of values) h = Math.imul(h ^ v, 16777619) >>> 0;
  return h;
};
window.openChecked = (url) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const state = {ws, ok: 0, other: 0, bad: [], closed: null};
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") {  // [u32 length][u32 fnv][body]
      const view = new DataView(event.data), body = new Uint8Array(event.data, 8);
      const good = view.getUint32(0) === body.length && view.getUint32(4) === fnv(body);
      good ? state.ok++ : state.bad.push("binary " + body.length);
      return;
    }
    let parsed;
    try { parsed = JSON.parse(event.data); } catch (e) { state.other++; return; }
    const item = parsed && parsed.data && parsed.data.pad !== undefined ? parsed.data : parsed;
    if (item.pad === undefined) { state.other++; return; }
    const points = Array.from(item.pad, (ch) => ch.codePointAt(0));
    const good = points.length === item.len && fnv(points) === item.sum;
    good ? state.ok++ : state.bad.push("text " + item.n);
  };
  ws.onclose = (event) => { state.closed = event.code; };
  ws.onopen = () => resolve(state);
  ws.onerror = () => reject(new Error("websocket error"));
});
0;  // page.evaluate would call a function the script ended with
"""


def fnv(values: Any) -> int:
    h = FNV_OFFSET
    for value in values:
        h = ((h ^ value) * FNV_PRIME) & 0xFFFFFFFF
    return h


def checked(data: str | bytes, n: int) -> str | bytes | dict[str, Any]:
    """``data`` in a form the page checks by itself (length and FNV-1a checksum)."""
    if isinstance(data, bytes):
        return len(data).to_bytes(4, "big") + fnv(data).to_bytes(4, "big") + data
    return {"n": n, "len": len(data), "sum": fnv(ord(ch) for ch in data), "pad": data}


@pytest.mark.browser
@pytest.mark.timeout(120)
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium")
async def test_chromium_inflates_every_frame(uvicorn_ws: str) -> None:
    """The page's own WebSocket checks every message's length and checksum in JS, on the
    managed route and on a user route whose code sends directly, all interleaved. (With
    the context-takeover switch removed from wsplugin/delivery/deflate.py, Chromium fails the
    user-route socket, 1006, after about a hundred messages.)"""
    from playwright.async_api import async_playwright

    app, manager = direct_send_app()
    sent = [checked(data, n) for n, data in enumerate(payloads())]
    echoes = [json.dumps(checked("".join(random.Random(n).choices(string.ascii_letters + "é",
                                                                  k=n * 37)), -n))
              for n in range(1, 80)]
    with ThreadServer(app, ws=uvicorn_ws) as server:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            try:
                page = await browser.new_page()
                await page.goto(f"{server.url}/ws-health")
                await page.evaluate(CHECKER)
                await page.evaluate(f"""async () => {{
                    window.managed = await openChecked("{server.ws_url}/ws/r");
                    window.own = await openChecked("{server.ws_url}/own");
                }}""")
                answer = await page.evaluate("managed.ws.extensions")
                assert "permessage-deflate" in answer
                # the page's compressed publishes stand alone (websockets-sansio): no
                # inflater is kept between them
                assert ("client_no_context_takeover" in answer) is (
                    uvicorn_ws == "websockets-sansio")

                async def joined() -> bool:
                    room = manager.hub.rooms.get("r")
                    return room is not None and len(room.members) == 2

                await wait_until(joined, what="both sockets to join")
                keys = {writer_key(manager, conn_id) for conn_id in manager.hub.connections}
                assert keys == {f"{_deflate.FRAME_KEY_PREFIX}{UVICORN_WS[uvicorn_ws]}"}
                send_echoes = page.evaluate(
                    "(texts) => texts.forEach((t, i) => { own.ws.send(t);"
                    " managed.ws.send(JSON.stringify({type: 'publish', data: JSON.parse(t)}));"
                    " if (i % 9 === 0) managed.ws.send('{\"type\":\"ping\"}'); })", echoes)
                broadcasts = on_server(server, _broadcast_all(manager, sent))
                await asyncio.gather(send_echoes, broadcasts)
                # the page's publishes reach both sockets (both are in room r)
                want = {"managed": len(sent) + len(echoes),
                        "own": len(sent) + 2 * len(echoes)}

                async def all_checked() -> bool:
                    counts = await page.evaluate("[managed.ok + managed.bad.length,"
                                                 " own.ok + own.bad.length,"
                                                 " managed.closed ?? own.closed]")
                    # done, or a socket failed (Chromium closes with 1002/1007 when a frame
                    # does not inflate): the assertion below says which
                    done = counts[:2] == [want["managed"], want["own"]]
                    return done or counts[2] is not None

                await wait_until(all_checked, seconds=30, what=f"{want} messages in the page")
                result = await page.evaluate(
                    "({managed: [managed.ok, managed.bad, managed.closed],"
                    "  own: [own.ok, own.bad, own.closed]})")
            finally:
                await browser.close()
    assert result == {"managed": [want["managed"], [], None], "own": [want["own"], [], None]}


async def _broadcast_all(manager: WebSocketManager, sent: list[Any]) -> None:
    for data in sent:
        await manager.broadcast("r", data)
        await asyncio.sleep(0)  # let the page's publishes and echoes in between
