"""Run every benchmark (``tox -e bench``); copy the figures into docs/benchmarks.md."""

from __future__ import annotations

import platform
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    sys.path.insert(0, str(HERE))
    only = set(sys.argv[1:])
    print(
        f"# {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.machine()}, {platform.system()}"
    )
    for script in sorted(HERE.glob("bench_*.py")):
        if only and script.stem.removeprefix("bench_") not in only:
            continue
        print(f"\n## {script.stem}")
        runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
