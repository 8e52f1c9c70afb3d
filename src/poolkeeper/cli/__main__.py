"""``python -m poolkeeper.cli``: the ``poolkeeper`` command."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
