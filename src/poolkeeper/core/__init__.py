"""Pool policy with no I/O and no driver import: testable without a database.

The synchronous pool (and a future asyncio one) are shells around these pieces.
"""

from __future__ import annotations

from .bag import Bag, Waiter
from .slot import Slot, SlotState

__all__ = ["Bag", "Slot", "SlotState", "Waiter"]
