"""``import aopkit`` with every first-party plugin loaded (a Kernel created): seconds and MB,
beside a bare interpreter start in the same run."""

from __future__ import annotations

import subprocess
import sys

from _util import report

CODE = """
import sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
t = time.perf_counter()
{body}
elapsed = time.perf_counter() - t
print(elapsed, rss(), len(sys.modules))
"""


def measure(body: str) -> tuple[float, float, int]:
    runs = []
    for _ in range(7):
        out = subprocess.run(
            [sys.executable, "-c", CODE.format(body=body)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        runs.append((float(out[0]), float(out[1]), int(out[2])))
    return min(runs)


def main() -> None:
    _, bare_mb, bare_mods = measure("pass")
    s, mb, mods = measure("import aopkit\naopkit.Kernel()")
    report("import aopkit + load every plugin", s, "s", target="<= 0.3 s")
    report(
        "  resident memory",
        mb,
        "MB",
        floor=bare_mb,
        floor_name="bare interpreter",
        target="<= 40 MB",
    )
    print(f"  modules: {mods} ({mods - bare_mods} more than a bare interpreter)")


if __name__ == "__main__":
    main()
