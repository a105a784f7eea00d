"""The h3 back adapter's tests share the h2 adapter's exchange helpers and the cells' ASGI app."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(_TESTS / "http_cells"))
sys.path.insert(0, str(_TESTS / "workers" / "h2_back"))
