"""Running the dashboard's resources in the app's lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.applications import Starlette

Step = Callable[[], AbstractAsyncContextManager[None]]


def add_lifespan_step(app: Starlette, step: Step) -> None:
    """Enter ``step()`` before the app's lifespan starts and exit it after the lifespan ends."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with step(), inner(app_) as state:
            yield state

    app.router.lifespan_context = lifespan
