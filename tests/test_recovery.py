"""Recovery: malformed positions, and recovery under load (paged, paced by each connection,
a bounded number at a time per node).

Real uvicorn servers, real clients.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.test_history import echo, messages, welcome
from tests.ws_helpers import errors_logged, on_server, recv_json, send_json, serve
from wsplugin import History

BAD_OFFSETS = [
    "\N{SUPERSCRIPT TWO}",  # str.isdigit() is True, int() refuses it
    "\N{ARABIC-INDIC DIGIT ONE}\N{ARABIC-INDIC DIGIT TWO}",  # int() reads it as 12
    "\N{MATHEMATICAL DOUBLE-STRUCK DIGIT ONE}",
    "1" * 4400,  # beyond int()'s 4,300 digits
    "9" * 17, "", "-1", "+1", " 1", "1_0", "0x1", "1.0",
]


async def test_a_malformed_url_offset_is_not_recovered_and_never_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Non-ASCII digits (which ``str.isdigit`` accepts), an offset of 4,400 digits (beyond
    ``int``'s limit) or of 17: ``recovered: false``, never a 1011 close or an ERROR log."""
    with errors_logged(caplog) as errors, \
            serve(history={"h-*": History(size=10)}, on_message=echo) as (server, manager):
        ws, hello = await welcome(server, "h-url")
        await on_server(server, manager.broadcast("h-url", "one"))
        await messages(ws, 1)
        for offset in [*BAD_OFFSETS, "9999999999999999"]:  # 16 digits: read, but ahead
            back, reply = await welcome(
                server, "h-url", f"?epoch={hello['epoch']}&offset={quote(offset)}")
            assert (reply["recovered"], reply["offset"]) == (False, 1), offset
            await send_json(back, {"type": "ping", "id": 7})
            assert await recv_json(back) == {"type": "pong", "id": 7}
            await back.close()
        good, reply = await welcome(server, "h-url", f"?epoch={hello['epoch']}&offset=0")
        assert reply["recovered"] is True
        assert [f["data"] for f in await messages(good, 1)] == ["one"]
        await good.close()
        await ws.close()
    assert errors == []
    assert manager.tally.closes["1011"] == 0
