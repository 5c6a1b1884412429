"""Endpoints: the managed room endpoint and user-owned routes handed to the manager.

:mod:`.managed` accepts a handshake (origin from :mod:`.origin`, authentication), sends
``welcome``, reads and validates frames and turns each into one call on the manager;
:mod:`.user_route` is ``manager.connect(websocket)``; :mod:`.shutdown` closes connections
when the server stops, whatever the server does on SIGTERM.
"""
