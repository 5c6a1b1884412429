"""``{prefix}-client.js`` and ``.d.ts``: served by the plugin, cacheable, self-contained."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from starlette.testclient import TestClient

from tests.ws_helpers import make_app
from wsplugin import install_ws_manager
from wsplugin.client_script import STATIC

URL = re.compile(r"(?:https?|wss?)://", re.IGNORECASE)


def test_script_is_served_as_a_javascript_module_with_an_etag() -> None:
    app, _ = make_app()
    with TestClient(app) as client:
        response = client.get("/ws-client.js")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-typescript-types"] == "/ws-client.d.ts"
        assert response.content == (STATIC / "wsplugin.js").read_bytes()
        assert "export class WSClient" in response.text
        etag = response.headers["etag"]
        again = client.get("/ws-client.js", headers={"if-none-match": etag})
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
        assert client.get("/ws-client.js", headers={"if-none-match": '"old"'}).status_code == 200
        assert client.head("/ws-client.js").status_code == 200


def test_types_are_served_beside_it() -> None:
    app, _ = make_app()
    with TestClient(app) as client:
        response = client.get("/ws-client.d.ts")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/typescript")
        assert "export class WSClient" in response.text
        assert response.headers["etag"] != client.get("/ws-client.js").headers["etag"]


def test_follows_the_prefix_and_yields_to_the_apps_own_route() -> None:
    app, _ = make_app(prefix="/live")
    with TestClient(app) as client:
        assert client.get("/live-client.js").status_code == 200
        assert client.get("/ws-client.js").status_code == 404
    own = FastAPI()

    @own.get("/ws-client.js")
    async def mine() -> PlainTextResponse:
        return PlainTextResponse("mine")

    install_ws_manager(own, admin_path=None)
    with TestClient(own) as client:
        assert client.get("/ws-client.js").text == "mine"


def test_client_is_self_contained_and_small() -> None:
    script = (STATIC / "wsplugin.js").read_text()
    assert URL.findall(script) == [], "the client must not load anything from elsewhere"
    assert "import " not in script  # no dependencies
    assert len(script.splitlines()) <= 700  # presence rooms took it from ~420 to ~680


def test_every_answer_says_nosniff() -> None:
    """200, HEAD and 304 of the script and its types: a browser never sniffs them."""
    app, _ = make_app()
    with TestClient(app) as client:
        for path, media_type in [("/ws-client.js", "text/javascript; charset=utf-8"),
                                 ("/ws-client.d.ts", "application/typescript")]:
            full = client.get(path)
            head = client.head(path)
            unchanged = client.get(path, headers={"if-none-match": full.headers["etag"]})
            assert [full.status_code, head.status_code, unchanged.status_code] == [200, 200, 304]
            for response in (full, head, unchanged):
                assert response.headers["x-content-type-options"] == "nosniff", (path, response)
            assert full.headers["content-type"] == media_type
            assert head.headers["content-type"] == media_type
