"""The Redis broker: many worker processes and machines behave as one server.

``RedisBroker`` (``redis://``, ``rediss://``, ``unix://``) is the only public name; the
modules of this package are its parts, one concept each (see docs/redis.md).
"""

from wsplugin.backends.redis.broker import RedisBroker

__all__ = ["RedisBroker"]
