"""The fast path: write a frame built once per message straight to uvicorn's transport.

Through ASGI, every recipient costs a ``send`` coroutine, Starlette's exception wrapper,
and uvicorn re-encoding the same text into a new WebSocket frame. A server frame is not
masked, so the bytes on the wire are the same for every recipient: build them once, then
``transport.write`` them. With permessage-deflate too: one frame compressed without context
takeover is valid for every connection with the same window size (:mod:`wsplugin.delivery.deflate`).

This applies only when the connection is served by one of uvicorn's two sans-I/O protocols,
``websockets-sansio`` (uvicorn's default when ``websockets`` is installed) or ``wsproto``
(:data:`PROTOCOLS`), negotiated no extension other than permessage-deflate, is open, and no
middleware wraps its websocket sends.
:func:`uvicorn_writer` checks all of it when the connection opens; anything else takes the
ordinary ASGI ``send`` (:class:`~wsplugin.delivery.asgi_writer.ASGIWriter`). A frame
written while the transport is paused waits in a task until it is writable again, and is
then the same prebuilt frame: every data frame the manager sends on a fast-path connection is
one of its own, only the close frame goes through uvicorn.
``tests/test_uvicorn_canary.py`` fails when the uvicorn internals used here move. Once the
writer is made, what uvicorn's protocol object no longer needs is let go or made smaller
(:mod:`wsplugin.delivery.uvicorn_idle`).

The server's own ``send`` is captured outermost: :func:`capture_server_send` wraps the
app's built middleware stack, whatever the order of ``add_middleware`` calls. A probe at
the innermost user-middleware position tells whether a middleware replaced ``send`` on the
way in; if one did (it may log, measure or rewrite messages), the connection takes the
ASGI path, so that middleware sees every frame, and a warning is logged once. The same two
positions take the managed route's shortcut (:mod:`wsplugin.delivery.shortcut`).
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wsplugin.delivery import deflate as _deflate
from wsplugin.delivery import uvicorn_idle as _idle
from wsplugin.delivery.asgi_writer import ASGIWriter
from wsplugin.delivery.shortcut import Shortcut
from wsplugin.delivery.writer import Compression, FastPath, InFlight, Resume, WriterOwner
from wsplugin.types import ASGIMessage, ASGISend, DropCounter

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from wsplugin.delivery.hub import FlushQueue

RAW_SEND_KEY = "wsplugin.raw_send"
DIRECT_KEY = "wsplugin.send_direct"
"""Set by the probe: True when the send reaching the app's routes is the server's own."""
FRAME_KEY = "wsplugin.frame"
EXTENSIONS = "Sec-WebSocket-Extensions"
SANSIO_MODULE = "uvicorn.protocols.websockets.websockets_sansio_impl"
WSPROTO_MODULE = "uvicorn.protocols.websockets.wsproto_impl"

CORK_BYTES = 65536
"""Held frames are written at the end of the loop iteration, or once they reach this size."""

WRAPPED = ("a middleware wraps websocket sends, so every frame goes through it "
           "(slower fan-out; see wsplugin.delivery.uvicorn_writer)")

try:
    from websockets.protocol import State

    _OPEN: Any = State.OPEN
except ImportError:  # pragma: no cover - websockets is not installed: no sansio fast path
    _OPEN = None

try:
    from wsproto.connection import ConnectionState

    _WSPROTO_OPEN: Any = ConnectionState.OPEN
except ImportError:  # pragma: no cover - wsproto is not installed: no wsproto fast path
    _WSPROTO_OPEN = None


@dataclass(frozen=True)
class Flavour:
    """What differs between uvicorn's two sans-I/O protocols, for the fast path.

    Both keep ``close_sent``, ``writable`` (an ``asyncio.Event``) and ``transport`` on the
    protocol object; they differ in the object whose ``state`` says the websocket is open
    and in where the negotiated extensions live.
    """

    name: str
    library: _deflate.Library
    open_state: Any
    """The ``state`` value of an open websocket (``None``: the library is missing)."""
    state_path: tuple[str, ...]
    """Attributes from the protocol to the object with ``state``."""
    extensions_path: tuple[str, ...]
    """Attributes from that object to its list of extensions."""
    offered_too: bool = False
    """The list holds every extension the server offered, negotiated or not (wsproto):
    only the enabled ones count."""
    handshake_answer: str = ""
    """The protocol's attribute holding the handshake's answer, read by uvicorn only until
    the answer is sent (websockets-sansio: ``response``, ~1.2 KB with its headers): the
    fast path lets it go. ``tests/test_uvicorn_canary.py`` fails if uvicorn reads it
    anywhere else."""

    def state_holder(self, protocol: Any) -> Any:
        return _follow(protocol, self.state_path)

    def extensions(self, holder: Any) -> list[Any]:
        """The negotiated extensions of the connection ``holder``."""
        found: list[Any] = _follow(holder, self.extensions_path)
        if self.offered_too:
            return [extension for extension in found if extension.enabled()]
        return found


def _follow(start: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        start = getattr(start, name, None)
    return start


SANSIO = Flavour("websockets-sansio", _deflate.WEBSOCKETS, _OPEN, ("conn",), ("extensions",),
                 handshake_answer="response")
WSPROTO = Flavour("wsproto", _deflate.WSPROTO, _WSPROTO_OPEN, ("conn", "connection"),
                  ("_proto", "extensions"), offered_too=True)
PROTOCOLS: dict[str, Flavour] = {SANSIO_MODULE: SANSIO, WSPROTO_MODULE: WSPROTO}
"""The uvicorn protocol modules the fast path writes for, by module name."""


# ---------------------------------------------------------------- capturing the send
class RawSendMiddleware:
    """Outermost: remember the server's own ``send`` in the scope of websocket connections
    (and, in an app without middleware of its own, take the managed route's shortcut).

    Like :class:`SendProbe`, it is not a coroutine function: it returns the awaitable of
    the app it hands the call to, which the caller awaits. An open websocket keeps every
    coroutine of its call chain suspended, so a layer that only picks the next app keeps
    none of its own (~260 bytes per idle connection). A websocket that takes the ordinary
    way (not the managed route's shortcut) keeps one: :func:`forgetting_send`."""

    def __init__(self, app: ASGIApp, shortcut: Shortcut | None = None) -> None:
        self.app = app
        self.shortcut = shortcut

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "websocket":
            return self.app(scope, receive, send)
        scope[RAW_SEND_KEY] = send
        if self.shortcut is not None and (route := self.shortcut.app_for(scope)) is not None:
            scope[DIRECT_KEY] = True  # no middleware in between
            return route(scope, receive, coroutine_send(send))  # it forgets the send itself
        return forgetting_send(self.app, scope, receive, send)


async def forgetting_send(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app`` on a websocket, then :func:`forget_send`."""
    try:
        await app(scope, receive, send)
    finally:
        forget_send(scope)


def forget_send(scope: Scope) -> None:
    """The connection is over: the scope lets go of the server's ``send``. uvicorn's
    protocol holds the scope and its ``send`` the protocol: kept, the two form a cycle that
    only a garbage collection frees (a full one, for a connection that lived long)."""
    scope.pop(RAW_SEND_KEY, None)


class SendProbe:
    """Innermost user middleware: is the ``send`` here still the server's own? (And the
    managed route's shortcut, see :mod:`wsplugin.delivery.shortcut`.) Returns the next
    app's awaitable, see :class:`RawSendMiddleware`."""

    def __init__(self, app: ASGIApp, shortcut: Shortcut | None = None) -> None:
        self.app = app
        self.shortcut = shortcut

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "websocket":
            scope[DIRECT_KEY] = scope.get(RAW_SEND_KEY) is send
            if self.shortcut is not None \
                    and (route := self.shortcut.app_for(scope)) is not None:
                return route(scope, receive, coroutine_send(send))
        return self.app(scope, receive, send)


_COROUTINE_FUNCTIONS: set[Any] = set()
"""Functions (of bound-method sends) seen to be coroutine functions: checked once."""


def coroutine_send(send: Send) -> Send:
    """``send`` itself if it is a coroutine function, else a coroutine function awaiting it
    (granian's is a native awaitable): what the framework's layers would have handed the
    endpoint, and what the ASGI writer steps (see :mod:`wsplugin.delivery.asgi_writer`)."""
    function = getattr(send, "__func__", None)
    if function is not None and function in _COROUTINE_FUNCTIONS:
        return send
    if inspect.iscoroutinefunction(send):
        if function is not None:
            _COROUTINE_FUNCTIONS.add(function)
        return send

    async def sending(message: Message) -> None:
        await send(message)

    return sending


def capture_server_send(app: Starlette, managed: WebSocketRoute | None = None) -> bool:
    """Wrap the middleware stack ``app`` builds at its first request (see the docstring);
    with ``managed``, the route that gets the shortcut past the framework's own layers.

    False if the stack is already built (the app started): then the ASGI path is used.
    """
    if app.middleware_stack is not None:
        return False
    build = app.build_middleware_stack

    def build_with_capture() -> ASGIApp:
        user = app.user_middleware
        shortcut = None if managed is None else Shortcut(app.router, managed)
        app.user_middleware = [*user, Middleware(SendProbe, shortcut if user else None)]
        try:
            stack = build()
        finally:
            app.user_middleware = user
        return RawSendMiddleware(stack, None if user else shortcut)

    app.build_middleware_stack = build_with_capture  # type: ignore[method-assign]
    return True


# ---------------------------------------------------------------- frames
def encode_frame(message: ASGIMessage) -> bytes:
    """The unmasked WebSocket frame for an ASGI send event, cached in the event itself."""
    frame: bytes | None = message.get(FRAME_KEY)
    if frame is not None:
        return frame
    text = message.get("text")
    if text is not None:
        opcode, payload = 0x81, text.encode()
    else:
        opcode, payload = 0x82, bytes(message.get("bytes") or b"")
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", opcode, size)
    elif size < 65536:
        header = struct.pack("!BBH", opcode, 126, size)
    else:
        header = struct.pack("!BBQ", opcode, 127, size)
    frame = header + payload
    message[FRAME_KEY] = frame
    return frame


# ---------------------------------------------------------------- choosing
def check_protocol(protocol: Any, flavour: Flavour = SANSIO) -> str | None:
    """The first uvicorn internal the fast path uses that is missing, or ``None``."""
    name = type(protocol).__name__
    if flavour.open_state is None:
        return f"{flavour.library.name} (not importable)"
    if not isinstance(getattr(protocol, "close_sent", None), bool):
        return f"{name}.close_sent (a bool)"
    if not callable(getattr(getattr(protocol, "writable", None), "is_set", None)):
        return f"{name}.writable (an asyncio.Event)"
    transport = getattr(protocol, "transport", None)
    for method in ("write", "is_closing"):
        if not callable(getattr(transport, method, None)):
            return f"{name}.transport.{method}()"
    holder = flavour.state_holder(protocol)
    where = ".".join((name, *flavour.state_path))
    if not hasattr(holder, "state"):
        return f"{where}.state (the {flavour.library.name} connection)"
    if not isinstance(_follow(holder, flavour.extensions_path), list):
        return f"{'.'.join((where, *flavour.extensions_path))} (a list)"
    return None


_CHECKED: dict[tuple[type, type, type, Flavour], str | None] = {}
""":func:`check_protocol` by the types of the objects it looks at: their structure is the
same for every connection of a server, so it is checked once (it costs microseconds, and
churn pays them on every connection)."""


def checked_protocol(protocol: Any, holder: Any, flavour: Flavour) -> str | None:
    """:func:`check_protocol`, once per kind of protocol, transport and connection."""
    key = (type(protocol), type(getattr(protocol, "transport", None)), type(holder), flavour)
    try:
        return _CHECKED[key]
    except KeyError:
        missing = _CHECKED[key] = check_protocol(protocol, flavour)
        return missing


def server_send(scope: Any) -> ASGISend | None:
    """The server's own ``send`` of this connection when no middleware wraps it and it is
    a coroutine function (the ASGI writer steps the coroutine it returns; granian's is a
    native awaitable, which the framework's wrapper turns into a coroutine)."""
    send: ASGISend | None = scope.get(RAW_SEND_KEY)
    if scope.get(DIRECT_KEY) is True and inspect.iscoroutinefunction(send):
        return send
    return None


def uvicorn_writer(
    owner: WriterOwner, send: ASGISend, scope: Any, compression: Compression = "auto"
) -> tuple[UvicornWriter | None, str]:
    """The fast-path writer of this connection, or ``None`` and why (``""``: closing).

    A connection that negotiated permessage-deflate gets the shared compressed frames of
    its window size (:mod:`wsplugin.delivery.deflate`), or plain frames with ``compression=False``.
    """
    raw_send = scope.get(RAW_SEND_KEY)
    if raw_send is None:
        return None, "the app's middleware stack was built before install_ws_manager()"
    protocol: Any = getattr(raw_send, "__self__", None)
    module = type(protocol).__module__ if protocol is not None else type(raw_send).__module__
    flavour = PROTOCOLS.get(module)
    if flavour is None:
        return None, f"the server ({module}) is not uvicorn's websockets-sansio or wsproto"
    if scope.get(DIRECT_KEY) is not True:
        return None, WRAPPED
    holder = flavour.state_holder(protocol)
    missing = checked_protocol(protocol, holder, flavour)
    if missing is not None:
        return None, f"uvicorn's internals changed: {missing} is missing"
    extensions = flavour.extensions(holder)
    bits = flavour.library.negotiated_bits(extensions)
    if isinstance(bits, str):
        return None, bits
    if (protocol.close_sent or holder.state is not flavour.open_state
            or protocol.transport.is_closing()):
        return None, ""
    writer = UvicornWriter(owner, send, protocol, flavour, holder)
    if bits and compression is not False:
        writer.frame_key, writer.encode = flavour.library.share(extensions[0], bits)
    elif bits:  # plain frames from wsplugin; uvicorn's own stand alone, no state held
        flavour.library.standalone(extensions[0])
    if getattr(protocol, "handshake_complete", None) is True:
        if flavour.handshake_answer:
            setattr(protocol, flavour.handshake_answer, None)  # sent: never read again
        _idle.slim(protocol)
    return writer, ""


def before_accept(scope: Any, fast_path: FastPath = "auto") -> bool:
    """Call just before accepting a websocket: on uvicorn's websockets-sansio protocol, a
    client that negotiated permessage-deflate is answered ``client_no_context_takeover``
    too, so the connection keeps no inflater between the client's messages (see
    :meth:`wsplugin.delivery.deflate.Library.client_standalone`). True if it was done;
    anything else (``fast_path=False``, another server, wsproto, where the extension is
    only made when the answer is sent) is left as it is."""
    protocol: Any = getattr(scope.get(RAW_SEND_KEY), "__self__", None)
    flavour = PROTOCOLS.get(type(protocol).__module__)
    if flavour is None or fast_path is False or flavour.library.inbound_switch is None:
        return False
    extensions = flavour.extensions(flavour.state_holder(protocol))
    if not extensions or not isinstance(extensions, list) \
            or getattr(protocol, "handshake_complete", None) is not False:
        return False  # the usual case: no extension negotiated
    headers = getattr(getattr(protocol, "response", None), "headers", None)
    if headers is None or not isinstance(flavour.library.negotiated_bits(extensions), int):
        return False
    answer = flavour.library.client_standalone(extensions[0], headers.get(EXTENSIONS))
    if answer is None:
        return False
    del headers[EXTENSIONS]
    headers[EXTENSIONS] = answer
    return True


# ---------------------------------------------------------------- writing
class UvicornWriter:
    """Direct writes to one uvicorn websockets-sansio or wsproto connection, corked per
    iteration.

    Frames that arrive for the connection in one loop iteration (a burst of publishes read
    in one go) are held and leave in one ``transport.write`` at the end of it: one syscall,
    still one message per frame. A publish alone in its iteration is written at once, in
    the one pass the manager's :class:`~wsplugin.delivery.hub.FlushQueue` makes at the end
    of it (``flushes.direct``). The common case, one frame per iteration, allocates
    nothing. When the transport is paused or the socket is closing, a message takes the
    ASGI-writer path (:meth:`paused`, an :class:`ASGIWriter` whose ``send`` is
    :meth:`send`): it waits for the transport, then writes the same prebuilt frame (or
    reports the closed socket).

    The frame bytes come from the shared message's cache under ``frame_key`` (built by
    ``encode`` on first use): a writer for a connection with another frame variant
    (compression) is the same class with another key and encoder.
    """

    __slots__ = (
        "_paused",
        "asgi_send",
        "encode",
        "flavour",
        "flushes",
        "frame_key",
        "held",
        "held_bytes",
        "held_extra",
        "held_room",
        "open",
        "owner",
        "protocol",
        "state",
        "transport",
        "writable",
    )

    def __init__(self, owner: WriterOwner, send: ASGISend, protocol: Any,
                 flavour: Flavour = SANSIO, holder: Any = None) -> None:
        self.owner = owner
        self.asgi_send = send
        self._paused: ASGIWriter | None = None  # made when the transport first pushes back
        self.protocol = protocol
        self.flavour = flavour
        # its ``state`` is ``open`` while open
        self.state = flavour.state_holder(protocol) if holder is None else holder
        self.open = flavour.open_state
        self.transport = protocol.transport
        self.writable = protocol.writable
        self.frame_key = FRAME_KEY
        self.encode: Callable[[ASGIMessage], bytes] = encode_frame
        self.held: bytes | None = None
        self.held_room: DropCounter | None = None
        self.held_extra: list[tuple[bytes, DropCounter | None]] | None = None
        self.held_bytes = 0
        self.flushes: FlushQueue = owner.flushes

    def paused(self) -> ASGIWriter:
        """The writer of messages that must wait for the transport (see the class)."""
        paused = self._paused
        if paused is None:
            paused = self._paused = ASGIWriter(self.owner, self.send)
        return paused

    def is_open(self) -> bool:
        """The websocket is open and its transport is not closing."""
        return not (self.protocol.close_sent or self.state.state is not self.open
                    or self.transport.is_closing())

    def write(self, message: ASGIMessage, size: int, room: DropCounter | None) -> Resume | None:
        # the same test as is_open(), inlined: this runs once per recipient
        if (not self.writable.is_set() or self.protocol.close_sent
                or self.state.state is not self.open or self.transport.is_closing()):
            return self.paused().write(message, size, room)
        frame = message.get(self.frame_key)
        if frame is None:
            frame = self.encode(message)
        if self.held is None:
            if self.flushes.direct:  # a publish alone in its iteration: see FlushQueue
                self.transport.write(frame)
                self.owner.count_sent(1, size)
                return None
            self.held = frame
            self.held_room = room
            self.held_bytes = size
            self.owner.request_flush()
            return None
        extra = self.held_extra
        if extra is None:
            self.held_extra = [(frame, room)]
        else:
            extra.append((frame, room))
        self.held_bytes += size
        if self.held_bytes >= CORK_BYTES:  # a producer that never yields: write now
            self._write_held()  # the socket was checked open and writable just above
        return None

    def write_batch(self, message: ASGIMessage, size: int, rooms: InFlight) -> Resume | None:
        if not self.writable.is_set() or not self.is_open():
            return self.paused().write_batch(message, size, rooms)
        frame = message.get(self.frame_key)
        self.transport.write(self.encode(message) if frame is None else frame)
        self.owner.count_sent(len(rooms), size)
        return None

    def flush(self) -> bool:
        """Write the held frames, even if a write since they were accepted paused the
        transport (asyncio buffers them); False if the socket is closing."""
        first = self.held
        if first is None:
            return True
        # is_open(), inlined: this runs once per recipient
        if self.protocol.close_sent or self.state.state is not self.open \
                or self.transport.is_closing():
            return False
        if self.held_extra is not None:
            self._write_held()
            return True
        self.held = None  # the common case: one frame this iteration
        self.transport.write(first)
        self.owner.count_sent(1, self.held_bytes)
        return True

    def _write_held(self) -> None:
        first, extra = self.held, self.held_extra
        self.held = self.held_extra = None
        if first is None:
            return
        if extra is None:
            self.transport.write(first)
            self.owner.count_sent(1, self.held_bytes)
            return
        self.transport.write(b"".join([first, *(frame for frame, _ in extra)]))
        self.owner.count_sent(1 + len(extra), self.held_bytes)

    async def send(self, message: ASGIMessage) -> None:
        """The ``send`` of the paused path and the drain task: a data message is written as
        this writer's own frame once the transport is writable; anything else (the close
        frame) goes to the ASGI ``send``."""
        if message.get("type") != "websocket.send":
            await self.asgi_send(message)
            return
        await self.writable.wait()  # uvicorn sets it when the connection is lost, too
        if not self.is_open():
            raise ConnectionError("websocket closed")
        frame = message.get(self.frame_key)
        self.transport.write(self.encode(message) if frame is None else frame)

    def discard(self) -> tuple[DropCounter | None, ...]:
        if self.held is None:
            return ()
        rooms = (self.held_room, *(room for _, room in self.held_extra or ()))
        self.held = self.held_extra = None
        return rooms

    def release(self) -> None:
        if self.transport.is_closing():  # nothing more will be read: see ended()
            _idle.ended(self.protocol)
