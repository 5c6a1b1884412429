"""Typed messages: pydantic models of what clients publish and what members receive.

A room's ``publish`` model validates each client's ``data`` once, before anything else
sees it; a room's ``message`` model checks what is broadcast, once per publish (never per
recipient). Errors go back to the client as pydantic's own list, without the input values.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from wsplugin.protocol import INVALID, reply
from wsplugin.rooms import PublishHandler

MAX_ERRORS = 20
"""At most this many entries of pydantic's error list go back to a client."""


def handler_model(handler: PublishHandler) -> type[BaseModel] | None:
    """The model of a typed handler ``(conn, room, msg: Model)``: the annotation of its third
    parameter when that is a pydantic model, else None (the handler gets plain data).

    ``TypeError`` if ``handler`` cannot take three positional arguments.
    """
    try:
        signature = inspect.signature(handler)
        signature.bind(None, None, None)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a publish handler takes (connection, room, msg), got {handler!r}: "
                        f"{exc}") from None
    positional = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 3:
        return None
    parameter = positional[2]
    try:
        model = typing.get_type_hints(handler).get(parameter.name)
    except Exception as exc:  # e.g. a model defined in a function, named as a string
        model = parameter.annotation
        if isinstance(model, str):  # never guess: an unchecked model would validate nothing
            raise TypeError(f"the annotation {model!r} of {parameter.name!r} in {handler!r} "
                            f"does not resolve ({exc!r}); define the model where the "
                            "handler's module can see it") from None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def error_list(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as ``{"loc", "msg", "type"}``: no input values, context or URLs."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in errors[:MAX_ERRORS]]


def error_detail(exc: ValidationError) -> str:
    count = exc.error_count()
    return f"{count} validation error{'s' if count != 1 else ''} for {exc.title}"


def invalid_frame(exc: ValidationError, command_id: Any = None) -> str:
    """``{"type":"error","code":"invalid","detail":...,"errors":[{"loc","msg","type"}]}``."""
    return reply("error", command_id, code=INVALID, detail=error_detail(exc),
                 errors=error_list(exc))


def validate(model: type[BaseModel], data: Any) -> BaseModel:
    """``data`` (plain JSON values, or another model's instance) as a ``model`` instance;
    ``ValidationError`` (a ``ValueError``) if it does not fit."""
    if isinstance(data, model):
        return data
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return model.model_validate(data)


def wire_data(model: type[BaseModel] | None, data: Any) -> Any:
    """What a publish sends as ``data``: a model instance as its JSON values (pydantic's JSON
    mode), checked against the room's ``message`` model when it has one."""
    if model is not None:
        data = validate(model, data)
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    return data
