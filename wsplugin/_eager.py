"""Run a coroutine eagerly: step it synchronously and only make a task if it must wait.

uvicorn's ``send`` on an open, writable websocket completes without suspending, so a
broadcast can write to every idle connection in one pass, without a task wake-up per
recipient (what ``websockets.broadcast`` does). When the coroutine does suspend (the
transport is paused because the client reads slowly), :class:`Resume` hands the suspended
coroutine to a task, which drives it on exactly as if it had been awaited there.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any

DONE: Any = object()
"""Returned by :func:`step` when the coroutine finished without suspending."""


def step(coro: Any) -> Any:
    """Step ``coro`` once: ``DONE`` if it finished, else what it yielded to the event loop.

    Exceptions raised by the coroutine propagate to the caller.
    """
    try:
        return coro.send(None)
    except StopIteration:
        return DONE


class Resume:
    """``await Resume(coro, yielded)`` continues a coroutine that :func:`step` suspended."""

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Any, yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, None, Any]:
        coro: Coroutine[Any, Any, Any] = self.coro
        yielded = self.yielded
        while True:
            try:
                yield yielded  # the future the coroutine waits on: the task waits on it for us
            except BaseException as exc:  # thrown into the task (cancel): pass it on
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                yielded = coro.send(None)
            except StopIteration as stop:
                return stop.value
