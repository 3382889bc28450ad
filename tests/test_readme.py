"""The README's example runs as shown, and its test command is the one CI runs."""

import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_example_runs():
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "carol heard: bob heard: alice heard: " in result.stdout


def test_readme_has_the_test_command_ci_reads():
    assert re.search(r"<!-- test-command -->\n    \S", README)


def test_readme_first_command_installs_and_runs_the_demo():
    commands = re.findall(r"^    (\S.*)$", README, re.M)
    assert commands[0].endswith("pip install -q . && .venv/bin/aopkit demo")
