"""``authenticate`` and ``dependencies`` of the managed endpoint, resolved as FastAPI does.

``authenticate`` may be any callable FastAPI can resolve as a dependency of a websocket
route: ``websocket: WebSocket``, ``Cookie()``, ``Header()``, ``Query()``, the ``room`` path
parameter, sub-dependencies (``Depends(get_current_user)``), generators. FastAPI's own
machinery resolves them (``get_dependant`` once here, ``solve_dependencies`` once per
handshake), so ``app.dependency_overrides`` applies. The plain ``authenticate(websocket)``
hook keeps its behaviour: a callable with one positional parameter that is not annotated
(or is annotated ``Any``/``object``) is called with the websocket, on the event loop, and
so is a dependency whose only parameter is the websocket (no override, nothing to solve).

A refusal is :class:`Refused`: an ``HTTPException``, a ``WebSocketException`` (its code
and reason) or a missing or invalid ``Cookie``/``Header``/``Query`` (whose value is never
logged). Anything else a dependency raises propagates (the handshake refuses it as before).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from fastapi import Depends
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import (
    get_dependant,
    get_parameterless_sub_dependant,
    solve_dependencies,
)
from fastapi.params import Depends as DependsParam
from starlette.exceptions import HTTPException, WebSocketException
from starlette.websockets import WebSocket

from wsplugin._utils import maybe_await
from wsplugin.protocol import CloseCode

logger = logging.getLogger("wsplugin")

IDENTITY = "identity"
"""The name the root dependant gives ``authenticate``'s result."""

_STACK_KEYS = ("fastapi_inner_astack", "fastapi_function_astack", "fastapi_astack")
"""Where FastAPI's versions look for the exit stacks of generator dependencies."""

_SOLVE_OPTIONS: dict[str, Any] = (
    {"embed_body_fields": False}
    if "embed_body_fields" in inspect.signature(solve_dependencies).parameters else {})

_PLAIN_ANNOTATIONS: tuple[object, ...] = (
    inspect.Parameter.empty, Any, object, "Any", "typing.Any", "object")


class Refused(Exception):
    """The handshake is refused: close ``code`` (before accept: HTTP 403) with ``reason``."""

    def __init__(self, why: str, code: int = CloseCode.POLICY, reason: str = "") -> None:
        super().__init__(why)
        self.code = code
        self.reason = reason


class Authenticator:
    """``authenticate`` (``None`` when tokens authenticate) and the extra ``dependencies``
    of every handshake; the dependant is built once, here."""

    def __init__(
        self,
        hook: Callable[..., Any] | None,
        dependencies: Sequence[DependsParam],
        path: str,
        overrides_provider: Any = None,
    ) -> None:
        self._hook = hook
        self._overrides = overrides_provider
        self._plain = hook is not None and _is_plain(hook)
        self._direct = (_websocket_parameter(hook, path)
                        if hook is not None and not self._plain and not dependencies else None)
        self._dependant: Dependant | None = None
        if dependencies or (hook is not None and not self._plain):
            self._dependant = _root(None if self._plain else hook, dependencies, path)

    async def identity(self, websocket: WebSocket) -> Any:
        """What ``authenticate`` returned (``None`` without a hook); :class:`Refused`."""
        hook = self._hook
        if self._direct is not None and not self._overridden():
            assert hook is not None
            return await maybe_await(hook(**{self._direct: websocket}))
        values = {} if self._dependant is None else await self._solve(websocket)
        if self._plain:
            assert hook is not None
            return await maybe_await(hook(websocket))
        return values.get(IDENTITY)

    def _overridden(self) -> bool:
        overrides = getattr(self._overrides, "dependency_overrides", None)
        return bool(overrides) and self._hook in overrides  # type: ignore[operator]

    async def _solve(self, websocket: WebSocket) -> dict[str, Any]:
        """FastAPI's ``solve_dependencies`` on the root dependant, inside exit stacks that
        close (generator dependencies end) once the handshake has its identity."""
        assert self._dependant is not None
        scope = websocket.scope
        saved = {key: scope[key] for key in _STACK_KEYS if key in scope}
        try:
            async with AsyncExitStack() as request_stack, AsyncExitStack() as function_stack:
                scope["fastapi_inner_astack"] = scope["fastapi_astack"] = request_stack
                scope["fastapi_function_astack"] = function_stack
                solved = await solve_dependencies(
                    request=websocket, dependant=self._dependant,
                    dependency_overrides_provider=self._overrides,
                    async_exit_stack=request_stack, **_SOLVE_OPTIONS)
        except HTTPException as exc:
            raise Refused(f"a dependency raised HTTPException({exc.status_code})") from None
        except WebSocketException as exc:
            raise Refused(f"a dependency raised WebSocketException({exc.code})", exc.code,
                          exc.reason or "") from None
        finally:
            for key in _STACK_KEYS:
                scope.pop(key, None)
            scope.update(saved)
        if solved.errors:
            raise Refused(f"a dependency's parameter is missing or invalid: "
                          f"{_describe(solved.errors)}")
        return solved.values


def _root(hook: Callable[..., Any] | None, dependencies: Sequence[DependsParam],
          path: str) -> Dependant:
    """The dependant of one handshake: the extra ``dependencies`` (first, as a router's
    run before its routes'), then ``authenticate`` under the name :data:`IDENTITY`."""
    dependant = get_dependant(path=path, call=_plain_root if hook is None else _root_of(hook))
    for depends in reversed(dependencies):
        dependant.dependencies.insert(0, get_parameterless_sub_dependant(depends=depends,
                                                                         path=path))
    return dependant


def _plain_root() -> None:
    """The root of a handshake whose ``authenticate`` is not a dependency."""


def _root_of(hook: Callable[..., Any]) -> Callable[..., None]:
    """The root of a handshake whose ``authenticate`` is a dependency, named ``identity``."""

    def handshake(identity: Any = Depends(hook)) -> None:
        return None

    return handshake


def _is_plain(hook: Callable[..., Any]) -> bool:
    """The classic ``authenticate(websocket)``: one positional parameter, no default, not
    annotated (or ``Any``/``object``), called with the websocket as always."""
    try:
        parameters = list(inspect.signature(hook).parameters.values())
    except (TypeError, ValueError):  # no signature (a builtin): call it as before
        return True
    if len(parameters) != 1:
        return False
    (parameter,) = parameters
    return (parameter.kind in (inspect.Parameter.POSITIONAL_ONLY,
                               inspect.Parameter.POSITIONAL_OR_KEYWORD)
            and parameter.default is inspect.Parameter.empty
            and any(parameter.annotation is a or parameter.annotation == a
                    for a in _PLAIN_ANNOTATIONS))


def _websocket_parameter(hook: Callable[..., Any], path: str) -> str | None:
    """The parameter name of a dependency that takes only the websocket (FastAPI's reading
    of its signature), so it can be called without solving anything; else ``None``."""
    try:
        dependant = get_dependant(path=path, call=hook)
        count = len(inspect.signature(hook).parameters)
    except Exception:  # FastAPI cannot read it: solving will say why
        return None
    name = dependant.websocket_param_name or dependant.http_connection_param_name
    return name if count == 1 else None


def _describe(errors: Sequence[Any]) -> str:
    """Where validation failed (``missing cookie session``), never the values given."""
    parts = []
    for error in errors:
        if isinstance(error, dict):
            location = " ".join(str(part) for part in error.get("loc", ()))
            parts.append(f"{error.get('type', 'invalid')} {location}".strip())
    return ", ".join(parts) or "invalid"
