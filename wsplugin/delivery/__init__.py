"""Delivery: local rooms, each connection's queue and limits, and how frames reach a socket.

The hub (:mod:`.hub`) is pure bookkeeping of local rooms; each :class:`.connection.Connection`
has a bounded outbox (:mod:`.outbox`), inbound limits (:mod:`.inbound`)
and one frame writer chosen when it opens (:mod:`.writer`): the ASGI writer
(:mod:`.asgi_writer`) or uvicorn's fast path (:mod:`.uvicorn_writer`, with shared
compressed frames from :mod:`.deflate`). :mod:`.shortcut` dispatches the managed route's
handshake past the framework's own layers (an open websocket keeps them in memory).
Nothing here knows the manager, a room's options or the broker: what a part needs from
above is a small Protocol.
"""
