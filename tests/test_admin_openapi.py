"""Schemathesis over the admin's OpenAPI, against a real server, as operator and as viewer:
no 5xx, and every status code, content type and body is the documented one. Once more as
operator against a server on a real Redis where every room keeps history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection

from admin_ui.throttle import Limits, Throttle
from tests.admin_helpers import ADMIN, OPERATOR, VIEWER, create_app
from tests.redis_server import RUN_ID
from tests.support import ThreadServer
from wsplugin import History

pytestmark = pytest.mark.timeout(120)

LENIENT = Limits(attempts=10**6, global_failures=10**6)
"""The fuzzer sends wrong credentials on purpose (is auth ignored?): no lockout here."""


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadServer]:
    app = create_app()
    app.state.wsplugin_admin.throttle = Throttle(LENIENT)
    with ThreadServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def redis_server(redis_url: str) -> Iterator[ThreadServer]:
    """Every room keeps history, on Redis: the history route reads through the Lua script."""
    app = create_app(backend=redis_url, redis_prefix=f"wsplugin-test-{RUN_ID}-openapi",
                     history={"*": History(size=20, ttl=60)})
    app.state.wsplugin_admin.throttle = Throttle(LENIENT)
    with ThreadServer(app) as running:
        yield running


# The app's own schema, as /openapi.json serves it (loaded at import: pytest 9 breaks
# schemathesis' lazy ``from_fixture`` loader); every call goes to the real server.
schema = schemathesis.openapi.from_dict(create_app().openapi()).include(
    path_regex=f"^{ADMIN}/api/"
)
# Unknown query parameters are ignored, as everywhere in FastAPI: not a schema violation.
schema.config.generation.update(allow_extra_parameters=False)


def bounded(case: Any) -> None:
    """The stream never ends by itself: ask for one event (an invalid ``max_events`` is kept:
    it is refused with 422 before any streaming)."""
    if not case.path.endswith("/stream"):
        return
    query = dict(case.query or {})
    given = query.get("max_events")
    if given is None or (isinstance(given, int) and given >= 1):
        query["max_events"] = 1
    case.query = query


FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

EXCLUDED = [negative_data_rejection]
"""Every other built-in check runs (no 5xx, documented status codes, content types and
schemas). This one expects a 4xx for every "invalid" request schemathesis makes, and some of
those are valid to FastAPI by design: a single-valued query parameter given twice
(``?room=a&room=b``) takes the last value and answers 200 (seen in a run)."""


@schema.parametrize()
@FUZZ
def test_as_operator(case: Any, server: ThreadServer) -> None:
    bounded(case)
    case.call_and_validate(base_url=server.url, headers=OPERATOR, timeout=10,
                         excluded_checks=EXCLUDED)


@schema.parametrize()
@FUZZ
def test_as_viewer(case: Any, server: ThreadServer) -> None:
    bounded(case)
    case.call_and_validate(base_url=server.url, headers=VIEWER, timeout=10,
                         excluded_checks=EXCLUDED)


@pytest.mark.redis
@pytest.mark.slow
@schema.parametrize()
@FUZZ
def test_on_redis_as_operator(case: Any, redis_server: ThreadServer) -> None:
    bounded(case)
    case.call_and_validate(base_url=redis_server.url, headers=OPERATOR, timeout=10,
                         excluded_checks=EXCLUDED)
