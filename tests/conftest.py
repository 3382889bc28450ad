"""Test setup: the sample third-party plugin (and the example plugin) are pip-installed into the
test environment, so they are discovered through their entry points exactly as a user's plugins
would be."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
# Third-party plugin distributions the tests install, each found through its entry point.
DISTRIBUTIONS = {
    "aopkit-sample-plugin": ROOT / "tests" / "sample_plugin",
    "aopkit-example-plugin": ROOT / "examples" / "custom_plugin",
}


def _source_version(path: Path) -> str:
    found = re.search(r'^version = "([^"]+)"', (path / "pyproject.toml").read_text(), re.M)
    assert found, f"{path}/pyproject.toml has no version"
    return found[1]


def _ensure_installed() -> None:
    """Install what is missing or older than its source (a changed plugin bumps its version)."""
    missing = []
    for name, path in DISTRIBUTIONS.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != _source_version(path):
            missing.append(str(path))
    if missing:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                *missing,
            ],
            check=True,
        )
        importlib.invalidate_caches()


_ensure_installed()


# The fixtures (kernel, serve, scripted, cassette) come from aopkit's own pytest plugin, loaded
# by its pytest11 entry point like any user's; it is named here only for an install older than
# that entry point (naming it twice would register it twice).
if "aopkit" not in {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}:
    pytest_plugins = ["aopkit.testing.plugin"]
