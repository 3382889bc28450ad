"""``import aopkit_mcp`` works without the ``mcp`` package; using it says what to install."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys
sys.modules["mcp"] = None  # as if the package were not installed
import aopkit_mcp
assert "mcp" not in [m for m in sys.modules if sys.modules[m] is not None], "imported eagerly"
try:
    aopkit_mcp.MCPClient.stdio("some-server")
except ImportError as exc:
    assert isinstance(exc, aopkit_mcp.MCPError)
    print(exc)
"""


def test_import_works_and_use_names_the_extra():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=True,
    )
    assert "pip install 'aopkit[mcp]'" in done.stdout
