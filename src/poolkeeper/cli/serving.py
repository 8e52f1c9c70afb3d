"""How a command keeps its console up: until its time runs out or the user presses Ctrl-C."""

from __future__ import annotations

import time

__all__ = ["serve_until_stopped"]

#: how often the wait looks at the clock (and lets Ctrl-C through)
_TICK_S = 0.2


def serve_until_stopped(seconds: float | None) -> None:
    """Block for ``seconds`` (None: until Ctrl-C); a Ctrl-C ends the wait and the line."""
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(_TICK_S)
    except KeyboardInterrupt:
        print()
