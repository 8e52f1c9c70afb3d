"""Sizes as people write them on a command line (``512MB``) and as the commands print them."""

from __future__ import annotations

import math

__all__ = ["format_bytes", "parse_size"]

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4,
          "tb": 1024**4, "tib": 1024**4}


def parse_size(text: str) -> int:
    """``512MB``, ``2 GiB``, ``1048576`` -> bytes (binary units). ValueError names the text."""
    raw = text.strip().lower().replace(" ", "")
    digits = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(digits):]
    try:
        value = float(digits)
    except ValueError:
        raise ValueError(f"size {text!r} is not a number with an optional unit "
                         "(e.g. 512MB, 2GiB)") from None
    if unit not in _UNITS or value < 0 or math.isnan(value):
        raise ValueError(f"size {text!r}: unknown unit {unit!r}; use B, KB, MB, GB or TB")
    return int(value * _UNITS[unit])


def format_bytes(n: float) -> str:
    """Bytes for people: ``1.5 GB``, ``640.0 KB``, ``12 B`` (binary units)."""
    for unit, size in (("TB", 1024**4), ("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{int(n):,} B"
