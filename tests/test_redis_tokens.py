"""Token connections across nodes on a real Redis: every node lists a connection's token
expiry, a refresh shows its new expiry there too, and each node closes its own expired
connections."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from tests.jwt_helpers import claims, closed_with, connect_with, rs_auth, rs_token
from tests.test_redis_users import Node, see_each_other
from tests.ws_helpers import on_server, recv_json, send_json, serve, wait_until

pytestmark = [pytest.mark.redis]


@contextlib.contextmanager
def token_nodes(url: str, prefix: str) -> Iterator[list[Node]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(serve(backend=url, redis_prefix=prefix, authenticate=rs_auth(),
                                         refresh_grace=0.1))
               for _ in range(2)]


async def test_expiry_is_listed_on_every_node_and_enforced_by_the_owner(
    redis_url: str, redis_prefix: str
) -> None:
    with token_nodes(redis_url, redis_prefix) as [a, b]:
        await see_each_other(a, b)
        first = time.time() + 60
        ws, welcome = await connect_with(a[0], "lobby", rs_token(claims(ttl=None, exp=first)))
        conn_id = welcome["connection_id"]

        async def b_lists(expires_at: float) -> bool:
            infos = await on_server(b[0], b[1].connections())
            return [(i.id, i.expires_at) for i in infos] == [(conn_id, expires_at)]

        await wait_until(lambda: b_lists(first), what="node b listing the expiry")
        soon = time.time() + 3  # node b must see it before it passes, on a loaded machine
        await send_json(ws, {"type": "refresh", "token": rs_token(claims(ttl=None, exp=soon))})
        assert (await recv_json(ws))["type"] == "refreshed"
        await wait_until(lambda: b_lists(soon), what="node b listing the new expiry")
        assert await closed_with(ws) == (4001, "token expired")  # node a's own timer
        assert a[1].tally.closes["4001"] == 1 and b[1].tally.closes["4001"] == 0
