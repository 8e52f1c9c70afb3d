"""The bulk loader: many tables, one memory budget, every row loaded exactly once.

    from poolkeeper.loader import Loader, load_files

:class:`Loader` buffers rows per table under one byte budget and loads them with each
database's bulk path (PostgreSQL ``COPY``, MariaDB ``LOAD DATA LOCAL INFILE``, SQLite
``executemany``), one transaction and one ledger row per batch, so nothing is dropped to make
room and nothing is loaded twice after a retry or a crash (durable mode). :func:`load_files`
loads CSV and JSON-lines files into one table (what ``poolkeeper load`` runs).

Modules, from the facade down:

- ``loader``: :class:`Loader`, the public face (it holds one engine);
- ``options``: :class:`LoaderOptions`, every option in one frozen, validated object;
- ``engine``: the worker threads and the I/O; composes the parts below;
- ``buffer``: rows per table in regions, what to flush and load next (no I/O);
- ``budget``: regions and the byte budget's accounting (no I/O);
- ``codec`` and ``rowplan``: rows to bytes; ``batch``: batch ids, the ledger's SQL;
- ``flusher``: one batch (transaction, retries, isolation of bad rows);
- ``targets``: how each database is loaded; ``spill``: the durable log;
  ``rejects``: where refused rows go; ``files``: :func:`load_files`.
"""

from __future__ import annotations

from .batch import FlushReason
from .files import LoadSummary, load_files
from .loader import Loader
from .options import LoaderOptions
from .rejects import Reject

__all__ = ["FlushReason", "LoadSummary", "Loader", "LoaderOptions", "Reject", "load_files"]
