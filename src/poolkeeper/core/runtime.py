"""Which twin of a lock-free path a new pool takes: the lock-free one only under the GIL.

Free-threaded CPython (PEP 703, supported since 3.14: PEP 779) runs threads in parallel, so a
path that is correct only because the GIL orders every bytecode (a store-then-check across two
deques, an unlocked ``OrderedDict.move_to_end``) must not run there: each such path has a
locked twin. The check is made per pool, when it is created, because an extension module can
turn the GIL back on when it is imported.

``POOLKEEPER_ASSUME_NO_GIL=1`` makes pools behave as on a build without the GIL on any build:
how the test suite runs the whole contract through the locked twins.
"""

from __future__ import annotations

import os
import sys

__all__ = ["ASSUME_NO_GIL_ENV", "gil_enabled"]

ASSUME_NO_GIL_ENV = "POOLKEEPER_ASSUME_NO_GIL"


def gil_enabled() -> bool:
    """True when the GIL is on now (and not assumed off by POOLKEEPER_ASSUME_NO_GIL)."""
    if os.environ.get(ASSUME_NO_GIL_ENV, "") not in ("", "0"):
        return False
    is_enabled = getattr(sys, "_is_gil_enabled", None)  # 3.13+; older builds always have it
    return True if is_enabled is None else bool(is_enabled())
