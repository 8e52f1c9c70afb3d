"""The ``poolkeeper`` command line (the ``poolkeeper`` console script, ``python -m
poolkeeper.cli``).

    main.py        arguments and the table of commands
    demo.py        ``demo``: runs workload.py (the shop workload, its planted faults), prints
                   the pool's report, serves the console with ``--console``
    doctor.py      ``doctor``: prints what diagnosis.py finds in a ``[pool]`` table
    console.py     ``console``: a pool's web console until Ctrl-C
    top.py         ``top``: a live terminal view of a running console's JSON
    load.py        ``load``: CSV / JSON-lines files into a table
    output.py sizes.py failures.py console_token.py   tables, sizes, and the words of errors

Like the console and the loader, the command line uses only the pools' public API and the
public views of ``observe/`` and ``console/``.
"""

from __future__ import annotations

from .main import build_parser, main

__all__ = ["build_parser", "main"]
