"""Where a dashboard is served, as the browser sees it: read from each request.

The router knows no mount path. Its pages take their links from the path of the request
they answer, which (ASGI, and Starlette since 0.33) is the full path: the ``root_path`` (a
proxy prefix such as ``uvicorn --root-path /api``, or a ``Mount`` around the dashboard), the
prefix the router was included under, and the page's own path inside the router.
"""

from __future__ import annotations

from starlette.requests import Request


def admin_base(request: Request, own_path: str) -> str:
    """The dashboard's URL path without a trailing slash, e.g. ``/api/ws-admin``.

    ``own_path`` is the path, inside the admin router, of the route answering ``request``
    (``"/"`` for the dashboard, ``"/login"``...).
    """
    root_path = str(request.scope.get("root_path", ""))
    path = str(request.scope["path"])
    if not path.startswith(root_path):  # a server that leaves the root_path out of the path
        path = root_path + path
    return path.removesuffix(own_path).rstrip("/")
