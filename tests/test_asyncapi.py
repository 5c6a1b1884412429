"""``{prefix}-asyncapi.json`` and ``{prefix}-docs``: the AsyncAPI 3.0.0 document of the
managed endpoint, validated against the official JSON Schema (vendored in tests/asyncapi/,
every ``$ref`` internal, so it validates offline), and its page."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.testclient import TestClient

from wsplugin import (
    Connection,
    History,
    Presence,
    RoomOptions,
    WebSocketManager,
    install_ws_manager,
)
from wsplugin.asyncapi.frames import FRAMES

HERE = Path(__file__).parent
SPEC = json.loads((HERE / "asyncapi" / "asyncapi-3.0.0.json").read_text())
PROTOCOL = (HERE.parent / "docs" / "protocol.md").read_text()


class Attachment(BaseModel):
    name: str
    size: int


class ChatIn(BaseModel):
    text: str
    attachments: list[Attachment] = []


class ChatOut(BaseModel):
    text: str
    user: str


class Order(BaseModel):
    id: int
    total: float


def create_app(**options: Any) -> FastAPI:
    app = FastAPI(title="Shop", version="2.1.0")
    options.setdefault("admin_path", None)
    options.setdefault("rooms", {
        "chat-*": RoomOptions(client_publish=True, history=History(100, 300),
                              presence=Presence(), publish=ChatIn, message=ChatOut,
                              max_message_bytes=4096, rate_limit=(20, 5.0)),
        "orders-*": RoomOptions(message=Order),
    })
    manager = install_ws_manager(app, presence={"lobby": Presence()}, **options)

    @manager.on_publish("dm-*")
    async def dm(conn: Connection, room: str, msg: ChatIn) -> ChatOut | None:
        return None

    return app


def document(client: TestClient, path: str = "/ws-asyncapi.json") -> dict[str, Any]:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    body: dict[str, Any] = response.json()
    return body


def errors_of(doc: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(SPEC)
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def test_the_document_validates_against_the_asyncapi_3_schema() -> None:
    doc = document(TestClient(create_app()))
    assert doc["asyncapi"] == "3.0.0"
    assert errors_of(doc) == []
    broken = copy.deepcopy(doc)  # the validation is not vacuous
    broken["channels"]["chat-*"]["address"] = 5
    del broken["operations"]["client.publish"]["action"]
    assert len(errors_of(broken)) >= 2


def test_each_pattern_is_a_channel_typed_by_its_models() -> None:
    doc = document(TestClient(create_app()))
    assert list(doc["channels"]) == ["chat-*", "orders-*", "dm-*", "lobby", "*"]
    chat = doc["channels"]["chat-*"]
    assert chat["address"] == "/ws/{room}" and "room" in chat["parameters"]
    assert chat["parameters"]["room"]["examples"] == ["chat-1"]
    message = chat["messages"]["server.message"]["payload"]["properties"]["data"]
    assert message == ChatOut.model_json_schema(mode="serialization")
    published = chat["messages"]["client.publish"]["payload"]["properties"]["data"]
    assert published["title"] == "ChatIn"
    assert published["properties"]["attachments"]["items"] == {
        "$ref": "#/components/schemas/Attachment"}  # nested models: shared components
    assert doc["components"]["schemas"]["Attachment"] == Attachment.model_json_schema()
    dm = doc["channels"]["dm-*"]["messages"]["client.publish"]["payload"]["properties"]["data"]
    assert dm["title"] == "ChatIn"  # the handler's annotation types the pattern
    orders = doc["channels"]["orders-*"]["messages"]
    assert orders["server.message"]["payload"]["properties"]["data"]["title"] == "Order"
    assert orders["client.publish"] == {"$ref": "#/components/messages/client.publish"}
    assert chat["x-wsplugin-options"]["max_message_bytes"] == 4096
    assert doc["channels"]["dm-*"]["x-wsplugin-options"]["on_publish"] is True
    assert "<locals>" not in json.dumps(doc)  # hooks by whether they are set, not by name
    example = chat["messages"]["client.publish"]["examples"][0]["payload"]
    assert ChatIn.model_validate(example["data"])  # the example fits the model


def test_every_frame_the_protocol_names_is_a_message_with_an_operation() -> None:
    doc = document(TestClient(create_app()))
    named = set(re.findall(r'\{"type":\s*"(\w+)"', PROTOCOL))
    assert {"welcome", "publish", "message", "join", "joined", "presence_diff"} <= named
    names = {m["name"] for m in doc["components"]["messages"].values()}
    wanted = named | {"connect", "refresh", "refreshed", "reset", "published", "error"}
    assert wanted <= names, wanted - names
    actions = {(op["title"], op["action"]) for op in doc["operations"].values()}
    client = {"connect", "publish", "join", "leave", "ping", "presence", "refresh"}
    server = {"welcome", "message", "joined", "left", "published", "presence",
              "presence_diff", "reset", "error", "pong"}
    assert {(t, "receive") for t in client} <= actions
    assert {(t, "send") for t in server} <= actions
    for message in doc["components"]["messages"].values():
        payload = message["payload"]
        assert payload["properties"]["type"] == {"type": "string", "const": message["name"]}
        example = message["examples"][0]["payload"]
        jsonschema.validate(example, payload)  # each example fits its own schema
    join = doc["operations"]["client.join"]
    assert join["reply"]["messages"] == [{"$ref": "#/channels/*/messages/server.joined"},
                                         {"$ref": "#/channels/*/messages/server.error"}]
    error = doc["components"]["messages"]["server.error"]["payload"]["properties"]
    assert "invalid" in error["code"]["examples"] and "errors" in error


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_every_reference_in_the_document_resolves() -> None:
    doc = document(TestClient(create_app(rooms={"x[ab]-*": RoomOptions(message=Order)})))
    refs = set(_refs(doc))
    assert "#/channels/x%5Bab%5D-%2A/messages/server.message" not in refs
    assert "#/channels/x%5Bab%5D-*/messages/server.message" in refs  # escaped as URI
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = doc
        for token in ref[2:].split("/"):
            node = node[unquote(token).replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict), ref


def test_the_server_is_the_one_the_request_reached() -> None:
    app = create_app()
    doc = document(TestClient(app, base_url="https://chat.example.com:8443"))
    assert doc["servers"] == {"default": {
        "host": "chat.example.com:8443", "protocol": "wss",
        "description": "This server, as the request for this document reached it"}}
    doc = document(TestClient(app, base_url="http://127.0.0.1:8000", root_path="/api"))
    assert doc["servers"]["default"]["protocol"] == "ws"
    assert doc["servers"]["default"]["pathname"] == "/api"
    assert doc["info"] == {"title": "Shop", "version": "2.1.0",
                           "description": doc["info"]["description"]}


def test_the_document_is_built_once_and_follows_a_new_handler() -> None:
    app = create_app()
    client = TestClient(app)
    first = document(client)
    docs = next(r for r in app.router.routes if getattr(r, "name", "") == "wsplugin_asyncapi")
    cached = docs.endpoint.__self__._cached  # type: ignore[attr-defined]
    document(client)
    assert docs.endpoint.__self__._cached is cached  # type: ignore[attr-defined]

    manager: WebSocketManager = app.state.ws_manager

    @manager.on_publish("late-*")
    def late(conn: Connection, room: str, msg: Order) -> Order:
        return msg

    assert "late-*" not in first["channels"]
    assert "late-*" in document(client)["channels"]


def test_asyncapi_url_none_turns_both_off_and_the_default_follows_the_prefix() -> None:
    off = TestClient(create_app(asyncapi_url=None))
    assert off.get("/ws-asyncapi.json").status_code == 404
    assert off.get("/ws-docs").status_code == 404
    moved = TestClient(create_app(prefix="/rt"))
    assert document(moved, "/rt-asyncapi.json")["channels"]["*"]["address"] == "/rt/{room}"
    assert moved.get("/rt-docs").status_code == 200
    custom = TestClient(create_app(asyncapi_url="/spec/ws.json"))
    assert document(custom, "/spec/ws.json")["asyncapi"] == "3.0.0"
    assert 'href="/spec/ws.json"' in custom.get("/ws-docs").text
    with pytest.raises(ValueError, match="asyncapi_url"):
        create_app(asyncapi_url="no-slash.json")


def test_the_page_shows_channels_operations_and_schemas_with_a_strict_csp() -> None:
    client = TestClient(create_app())
    page = client.get("/ws-docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.text
    assert "<script" not in html and "style=" not in html  # nothing inline
    assert "http://" not in html.replace('href="http://testserver', "")  # no CDN
    for text in ("chat-*", "orders-*", "dm-*", "ChatIn", "ChatOut", "Attachment",
                 "presence_diff", "refreshed", "ws://testserver/ws/{room}"):
        assert text in html, text
    css = client.get("/ws-docs.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["x-content-type-options"] == "nosniff"
    assert client.get("/ws-docs.css", headers={"if-none-match": css.headers["etag"]}
                      ).status_code == 304


def test_the_page_escapes_what_the_request_controls() -> None:
    client = TestClient(create_app())
    html = client.get("/ws-docs", headers={"host": "<img src=x onerror=alert(1)>"}).text
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_every_frame_has_a_schema_and_an_example() -> None:
    assert len({f.key for f in FRAMES}) == len(FRAMES)
    for frame in FRAMES:
        jsonschema.validate(frame.example, frame.schema())
