"""The admin JSON API against a real uvicorn server and real websocket clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.admin_helpers import (
    ADMIN,
    OPERATOR,
    VIEWER,
    XSS,
    create_app,
    identity_from_query,
    next_message,
    open_client,
)
from tests.support import ThreadServer


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    app = create_app(authenticate=identity_from_query, client_publish=True)
    with ThreadServer(app) as running:
        yield running


@pytest.fixture
async def http(server: ThreadServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=OPERATOR, timeout=10) as client:
        yield client


async def get(http: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await http.get(ADMIN + "/api" + path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def post(http: httpx.AsyncClient, action: str, body: dict[str, Any]) -> Any:
    response = await http.post(f"{ADMIN}/api/{action}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def until(check: Any, seconds: float = 5.0) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await check()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_connections_are_listed_searched_and_paged(
    server: ThreadServer, http: httpx.AsyncClient
) -> None:
    clients = []
    for n in range(5):
        room = "red" if n % 2 else "blue"
        clients.append(await open_client(server.ws_url, f"{room}?user=user{n}"))
    try:
        page = await get(http, "/connections")
        assert page["total"] == 5 and len(page["items"]) == 5
        newest = page["items"][0]
        assert newest["id"] == clients[-1][1]  # newest first
        assert newest["identity"] == "user4" and newest["rooms"] == ["blue"]
        assert newest["remote"].startswith("127.0.0.1:")
        assert {"messages_in", "bytes_out", "queue_depth", "dropped", "connected_at"} <= set(newest)
        assert (await get(http, "/connections", q="USER3"))["items"][0]["identity"] == "user3"
        assert (await get(http, "/connections", q="red"))["total"] == 2
        assert (await get(http, "/connections", room="blue"))["total"] == 3
        by_id = await get(http, "/connections", q=clients[0][1])
        assert [c["id"] for c in by_id["items"]] == [clients[0][1]]
        second = await get(http, "/connections", offset=2, limit=2)
        assert second["total"] == 5 and [c["id"] for c in second["items"]] == [
            clients[2][1], clients[1][1]]
        bad = await http.get(f"{ADMIN}/api/connections", params={"room": "no room!"})
        assert bad.status_code == 422
    finally:
        for ws, _ in clients:
            await ws.close()


async def test_rooms_and_room_detail(server: ThreadServer, http: httpx.AsyncClient) -> None:
    a, _ = await open_client(server.ws_url, "alpha?user=ann")
    b, _ = await open_client(server.ws_url, "alpha?user=bob")
    c, _ = await open_client(server.ws_url, "beta?user=cid")
    try:
        rooms = await get(http, "/rooms")
        assert [(r["name"], r["members"]) for r in rooms["items"]] == [("alpha", 2), ("beta", 1)]
        assert (await get(http, "/rooms", q="bet"))["total"] == 1
        detail = await get(http, "/rooms/alpha")
        assert detail["members"] == 2
        assert {m["identity"] for m in detail["connections"]["items"]} == {"ann", "bob"}
        missing = await http.get(f"{ADMIN}/api/rooms/gamma")
        assert missing.status_code == 404
        await a.send('{"type": "publish", "data": "hi"}')
        await next_message(b)
        stats = await until(lambda: _room(http, "alpha"))
        assert stats["messages"] >= 1
    finally:
        for ws in (a, b, c):
            await ws.close()


async def _room(http: httpx.AsyncClient, name: str) -> Any:
    detail = await get(http, f"/rooms/{name}")
    return detail if detail["messages"] else None


async def test_broadcast_send_kick_and_audit(
    server: ThreadServer, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wsplugin.audit")
    ws, conn_id = await open_client(server.ws_url, "lobby?user=mallory")
    other, _ = await open_client(server.ws_url, "elsewhere?user=olivia")
    try:
        result = await post(http, "broadcast", {"room": "lobby", "data": {"notice": "hello"}})
        assert result == {"ok": True, "delivered": 1}
        frame = await next_message(ws)
        assert frame["room"] == "lobby" and frame["data"] == {"notice": "hello"}
        assert frame["sender"] is None
        everyone = await post(http, "broadcast", {"room": None, "data": "all"})
        assert everyone["delivered"] == 2
        assert (await next_message(ws))["data"] == "all"
        assert (await next_message(other))["data"] == "all"
        assert (await post(http, "send", {"connection_id": conn_id, "data": XSS}))["ok"]
        assert (await next_message(ws))["data"] == XSS
        assert not (await post(http, "send", {"connection_id": "nobody", "data": 1}))["ok"]
        kicked = await post(http, "kick", {"connection_id": conn_id, "reason": "be nice"})
        assert kicked == {"ok": True, "delivered": None}
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "be nice")
        audit = await get(http, "/audit")
        assert [a["action"] for a in audit] == ["kick", "send", "send", "broadcast_all",
                                                 "broadcast"]
        assert audit[0]["target"] == conn_id and audit[0]["detail"] == "be nice"
        assert audit[2]["result"] == "ok" and audit[1]["result"] == "not found"
        assert all(a["actor"].startswith("token-") and a["role"] == "operator" for a in audit)
        logged = [r for r in caplog.records if r.name == "wsplugin.audit"]
        assert len(logged) == 5 and "kick" in logged[-1].getMessage()
        events = await until(lambda: _events_with(http, "disconnected"))
        kinds = [e["kind"] for e in events]
        assert kinds.index("disconnected") < kinds.index("kicked") < kinds.index("connected")
        assert any(e["kind"] == "broadcast" and e["room"] == "lobby" for e in events)
        gone = await until(lambda: _gone(http, conn_id))
        assert gone
    finally:
        await other.close()


async def _events_with(http: httpx.AsyncClient, kind: str) -> Any:
    events = await get(http, "/events")
    return events if any(e["kind"] == kind for e in events) else None


async def _gone(http: httpx.AsyncClient, conn_id: str) -> bool:
    page = await get(http, "/connections", q=conn_id)
    return bool(page["total"] == 0)


async def test_viewer_reads_but_actions_are_refused(
    server: ThreadServer, http: httpx.AsyncClient
) -> None:
    ws, conn_id = await open_client(server.ws_url, "lobby")
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=VIEWER) as viewer:
            listing = await viewer.get(f"{ADMIN}/api/connections")
            assert listing.json()["total"] == 1
            kick = await viewer.post(f"{ADMIN}/api/kick", json={"connection_id": conn_id})
            assert kick.status_code == 403
        assert (await get(http, "/connections"))["total"] == 1
        assert await get(http, "/audit") == []
    finally:
        await ws.close()


async def test_overview_totals_and_rates(server: ThreadServer, http: httpx.AsyncClient) -> None:
    ws, _ = await open_client(server.ws_url, "lobby")
    try:
        overview = await get(http, "/overview")
        assert overview["totals"]["connections"] == 1
        assert overview["totals"]["rooms"] == 1
        assert set(overview["rates"]) == {"messages_in", "messages_out", "bytes_out"}
        assert overview["health"]["status"] == "ok"
        assert overview["nodes"][0]["id"] == overview["node"]
    finally:
        await ws.close()
