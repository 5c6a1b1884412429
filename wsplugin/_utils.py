"""Small private helpers."""

from __future__ import annotations

import inspect
from typing import Any


async def maybe_await(value: Any) -> Any:
    """Hooks may be sync or async: await the result when it is awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value
