"""Layer 5: the node's fragment store (content-addressed, atomic, hashed on every read).

``FragmentStore`` is the seam; ``DiskFragmentStore`` is what a datacenter runs and
``MemoryFragmentStore`` what the in-memory network and the tests run.  One conformance suite
(tests/store/test_store_conformance.py) holds both to the same contract.
"""

from p2pstore.errors import FragmentNotFound
from p2pstore.store.api import (
    MAX_PAGE,
    FragmentStore,
    ScrubReport,
    StoreUsage,
)
from p2pstore.store.disk import DiskFragmentStore
from p2pstore.store.memory import MemoryFragmentStore
from p2pstore.store.recovery import Reconciliation

__all__ = [
    "MAX_PAGE",
    "DiskFragmentStore",
    "FragmentNotFound",
    "FragmentStore",
    "MemoryFragmentStore",
    "Reconciliation",
    "ScrubReport",
    "StoreUsage",
]
