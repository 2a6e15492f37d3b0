"""Profiles a node process started by ``ping_flood.py --profile DIR`` (this directory is put on
its ``PYTHONPATH``): cProfile from the first import to a clean exit, dumped to DIR/PID.prof.

Why a ``sitecustomize``: the node process is ``flood_peers.py node``, which must stay what
``floods.py`` runs; Python imports this module before it, when it is on the path.
"""

import atexit
import cProfile
import os

_out = os.environ.get("P2PSTORE_BENCH_PROFILE")
if _out:
    _profile = cProfile.Profile()
    _profile.enable()

    def _dump() -> None:
        _profile.disable()
        _profile.dump_stats(os.path.join(_out, f"{os.getpid()}.prof"))

    atexit.register(_dump)
