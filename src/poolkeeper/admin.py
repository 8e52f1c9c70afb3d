"""SQL over poolkeeper's own state: ``poolkeeper.admin.query(sql)``.

A read-only SQL query over a consistent snapshot of the tables ``resources``, ``pools``,
``connections``, ``sql_stats``, ``statement_cache``, ``memory`` and more (their columns are
documented in :mod:`poolkeeper.observe.admin`)::

    from poolkeeper import admin
    print(admin.query("select site, count(*), max(age_s) from resources "
                      "where kind = 'checkout' and age_s > 10 group by site").format())
"""

from __future__ import annotations

from .observe.admin import (
    ALLOWED_FUNCTIONS,
    TABLES,
    AdminQueryError,
    AdminSnapshot,
    QueryResult,
    format_table,
    query,
    snapshot,
)

__all__ = ["ALLOWED_FUNCTIONS", "TABLES", "AdminQueryError", "AdminSnapshot", "QueryResult",
           "format_table", "query", "snapshot"]
