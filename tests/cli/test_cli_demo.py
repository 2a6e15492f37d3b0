"""``p2pstore demo``, the README's main command: real processes, a put, nodes killed, a get,
and repair without any command."""

from __future__ import annotations

import os
import re
import sys

import pytest
from process_groups import run_group


@pytest.mark.integration
def test_the_demo_gets_the_file_back_after_killing_half_of_a_chunks_holders():
    result = run_group(
        [sys.executable, "-m", "p2pstore", "demo", "--size", "6 MiB", "--nodes", "10"],
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"},
        timeout=150,
    )
    output = " ".join(result.stdout.split())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "healthy" in output and "degraded" in output
    assert "SIGKILL to 4 nodes holding fragments of chunk 0" in output
    assert "got it back byte-identical" in output
    # ... and the stewards brought chunk 0 back above its repair threshold by themselves.
    assert re.search(r"repaired: chunk 0 is back to [678]/8 live fragments", output), output
    assert "with no command run" in output
    codes = re.findall(r"exit code (-?\d+)", output)
    assert sorted(codes) == sorted(["0"] * 6 + ["-9"] * 4)
