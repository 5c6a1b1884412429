"""A worker that tells its pid: ``uvicorn tests.apps.pid_app:app --workers 2`` shows which
worker answered. The admin has no configured token (it is generated at start-up)."""

from __future__ import annotations

import os
import time

from fastapi import FastAPI

from wsplugin import install_ws_manager

app = FastAPI()
install_ws_manager(app, backend="memory://", admin_auth=None)


@app.get("/pid")
async def pid() -> dict[str, int]:
    """Blocks this worker's loop a moment, so concurrent new connections go to the others."""
    time.sleep(0.2)  # noqa: ASYNC251 (blocking on purpose)
    return {"pid": os.getpid()}
