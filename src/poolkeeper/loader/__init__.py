"""The bulk loader: many tables, one memory budget, every row loaded exactly once.

    from poolkeeper.loader import Loader, load_files

:class:`Loader` buffers rows per table under one byte budget and loads them with each
database's bulk path (PostgreSQL ``COPY``, MariaDB ``LOAD DATA LOCAL INFILE``, SQLite
``executemany``), one transaction and one ledger row per batch, so nothing is dropped to make
room and nothing is loaded twice after a retry or a crash (durable mode). :func:`load_files`
loads CSV and JSON-lines files into one table (what ``poolkeeper load`` runs).

Modules: ``budget`` (regions, the byte budget: no I/O), ``codec`` (rows to bytes),
``batch`` (batch ids, the ledger's SQL), ``targets`` (how each database is loaded),
``flusher`` (one batch: transaction, retries, isolation of bad rows), ``spill`` (the durable
log), ``rejects`` (where refused rows go), ``loader`` (the Loader), ``files`` (load_files).
"""

from __future__ import annotations

from .batch import FlushReason
from .files import LoadSummary, load_files
from .loader import Loader
from .rejects import Reject

__all__ = ["FlushReason", "LoadSummary", "Loader", "Reject", "load_files"]
