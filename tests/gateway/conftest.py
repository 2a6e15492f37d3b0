"""The gateway's tests reuse the net layer's harnesses (an in-memory mesh of storage nodes):
its helper modules are put on the path and its conftest is importable as ``net_harness``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NET = Path(__file__).resolve().parent.parent / "net"
sys.path.insert(0, str(_NET))
if "net_harness" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("net_harness", _NET / "conftest.py")
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["net_harness"] = _module
    _spec.loader.exec_module(_module)
