"""The web console: pool gauges, SQL statistics, caches, connections, resources and memory.

Runs inside the application's process in a background thread (``poolkeeper-console``) and
stops with :meth:`ConsoleHandle.stop`. Every page has a JSON twin under ``/api/``, and
``/metrics`` serves the Prometheus exposition (with the ``metrics`` extra installed)::

    from poolkeeper.console import serve

    handle = serve([pool])            # loopback, a free port
    print(handle.url)                 # http://127.0.0.1:PORT/
    handle.stop()

Pages: ``/`` overview, ``/sql``, ``/caches``, ``/connections``, ``/resources``, ``/memory``,
``/query`` (one read-only SELECT over :mod:`poolkeeper.observe.admin`'s tables).
"""

from __future__ import annotations

from .history import History
from .server import ConsoleHandle, is_loopback, serve

__all__ = ["ConsoleHandle", "History", "is_loopback", "serve"]
