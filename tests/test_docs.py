"""The docs a user builds from: every Python block runs as shown, and every page is reachable.

The pages are README.md, ``docs/**/*.md`` and ``examples/**/*.md``. Each page's blocks run
in order in a fresh interpreter that may reach only loopback, with ResourceWarnings as errors
(see ``tests/docrun.py``); a block after ``<!-- not-run: reason -->`` is only compiled. Every
docs page can be reached from the README, and no relative link (or its ``#anchor``) is broken.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests import docrun

ROOT = docrun.ROOT
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Pages beside the examples are read too: their blocks run and their links hold.
READ = [*PAGES, *sorted((ROOT / "examples").rglob("*.md"))]
LINK = re.compile(
    r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)|src=\"(?P<src>[^\"]+)\""
)
IMAGE = re.compile(r"!\[[^\]]*\]\((?P<target>[^)\s]+)\)")


@pytest.mark.parametrize("page", READ, ids=docrun.relative)
def test_every_python_block_of_the_page_runs(page: Path) -> None:
    if not docrun.blocks(page):
        pytest.skip("no python blocks")
    outcome = docrun.run_page(page)
    assert outcome.ok, outcome.report


# --- the runner itself: each guard fails when it should -----------------------------------------


def test_a_failing_block_names_its_page_and_line(tmp_path: Path) -> None:
    page = _page(
        tmp_path, "# t\n\n```python\nx = 1\n```\n\ntext\n\n```python\nassert x == 2\n```\n"
    )
    outcome = docrun.run_page(page)
    assert not outcome.ok
    assert f"{docrun.relative(page)}, the block at line 10" in outcome.report
    assert "assert x == 2" in outcome.report  # the traceback shows the page's own line


def test_blocks_of_a_page_share_names_and_may_await(tmp_path: Path) -> None:
    page = _page(
        tmp_path,
        "```python\nimport asyncio\nasync def two():\n    return 2\n```\n"
        "```python\nvalue = await two()\nprint('value', value)\n```\n",
    )
    outcome = docrun.run_page(page)
    assert outcome.ok, outcome.report
    assert "value 2" in outcome.report


def test_an_unclosed_client_session_fails_even_if_still_referenced() -> None:
    kept = "import aiohttp\nasync def main():\n    return aiohttp.ClientSession()\n"
    outcome = docrun.run_source(kept + "session = await main()\n")
    assert not outcome.ok
    assert "Unclosed client session" in outcome.report


def test_a_kernel_left_open_after_a_model_call_fails() -> None:
    """The class of leak the docs must avoid: a kernel whose HTTP pool was used, never closed."""
    source = (
        "import aopkit\n"
        "kernel = aopkit.Kernel()\n"
        "async def main():\n"
        "    kernel.pool.session()\n"
        "await main()\n"
    )
    outcome = docrun.run_source(source)
    assert not outcome.ok
    assert "Unclosed client session" in outcome.report
    closed = source + "await kernel.aclose()\n"
    assert docrun.run_source(closed).ok


def test_a_resource_warning_on_stderr_fails() -> None:
    source = "import gc\nopen(__import__('os').devnull)\ngc.collect()\n"
    outcome = docrun.run_source(source)
    assert not outcome.ok
    assert "ResourceWarning" in outcome.report


@pytest.mark.parametrize("host", ["192.0.2.1", "example.com", "10.0.0.1", "[2001:db8::1]"], ids=str)
def test_only_loopback_is_reachable(host: str) -> None:
    source = (
        "import aiohttp\n"
        "async def main():\n"
        "    async with aiohttp.ClientSession() as s:\n"
        f"        await s.get('http://{host}:9/')\n"
        "await main()\n"
    )
    outcome = docrun.run_source(source, timeout=30)
    assert not outcome.ok
    assert "may reach only loopback" in outcome.report


@pytest.mark.parametrize("host", ["192.0.2.1", "2001:db8::1"], ids=str)
def test_a_datagram_reaches_only_loopback_too(host: str) -> None:
    family = "AF_INET6" if ":" in host else "AF_INET"
    source = (
        "import socket\n"
        f"with socket.socket(socket.{family}, socket.SOCK_DGRAM) as s:\n"
        f"    s.sendto(b'x', ('{host}', 9))\n"
    )
    outcome = docrun.run_source(source, timeout=30)
    assert not outcome.ok
    assert "may reach only loopback" in outcome.report


def test_a_datagram_to_loopback_is_sent() -> None:
    source = (
        "import socket\n"
        "with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as r, "
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:\n"
        "    r.bind(('127.0.0.1', 0))\n"
        "    s.sendto(b'x', 0, r.getsockname())\n"
        "    assert r.recv(1) == b'x'\n"
    )
    outcome = docrun.run_source(source)
    assert outcome.ok, outcome.report


def test_loopback_is_reachable() -> None:
    source = (
        "import socket\n"
        "server = socket.socket()\nserver.bind(('127.0.0.1', 0))\nserver.listen()\n"
        "client = socket.create_connection(server.getsockname())\n"
        "client.close()\nserver.close()\n"
    )
    outcome = docrun.run_source(source)
    assert outcome.ok, outcome.report


def test_a_not_run_block_is_compiled_not_run(tmp_path: Path) -> None:
    runs = _page(tmp_path, "<!-- not-run: needs a key -->\n```python\nraise SystemExit(3)\n```\n")
    assert docrun.run_page(runs).ok
    broken = _page(tmp_path, "<!-- not-run: needs a key -->\n```python\ndef (:\n```\n", "b.md")
    outcome = docrun.run_page(broken)
    assert not outcome.ok
    assert "SyntaxError" in outcome.report and "line 3" in outcome.report


def test_a_not_run_block_must_say_why(tmp_path: Path) -> None:
    page = _page(tmp_path, "<!-- not-run -->\n```python\npass\n```\n")
    with pytest.raises(docrun.DocError, match=r":2: a not-run block must say why"):
        docrun.blocks(page)


def test_an_unclosed_fence_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(docrun.DocError, match="never closed"):
        docrun.blocks(_page(tmp_path, "```python\npass\n"))


def test_a_block_inside_another_fence_is_not_run(tmp_path: Path) -> None:
    page = _page(tmp_path, "````markdown\n```python\nraise SystemExit(1)\n```\n````\n")
    assert docrun.blocks(page) == []


def test_a_block_indented_in_a_list_runs_dedented(tmp_path: Path) -> None:
    page = _page(tmp_path, "- a step:\n\n  ```python\n  if True:\n      print('ran')\n  ```\n")
    [block] = docrun.blocks(page)
    assert block.source == "if True:\n    print('ran')\n"
    outcome = docrun.run_page(page)
    assert outcome.ok and "ran" in outcome.report


def test_a_page_that_hangs_times_out_naming_the_block(tmp_path: Path) -> None:
    page = _page(tmp_path, "```python\nx = 1\n```\n\n```python\nimport time\ntime.sleep(60)\n```\n")
    outcome = docrun.run_page(page, timeout=10)
    assert not outcome.ok
    assert "timed out" in outcome.report and "the block at line 6" in outcome.report


def test_a_timeout_kills_what_the_page_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    source = (
        "import subprocess, time\n"
        "child = subprocess.Popen(['sleep', '300'], stdout=subprocess.DEVNULL,\n"
        "                         stderr=subprocess.DEVNULL)  # holds none of the page's pipes\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n"
    )
    outcome = docrun.run_source(source, timeout=10)
    assert not outcome.ok and "timed out" in outcome.report
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody reaped yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_secrets_of_the_environment_do_not_reach_the_docs(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-should-not-leak")
    outcome = docrun.run_source("import os\nprint(sorted(os.environ))\n")
    assert outcome.ok, outcome.report
    assert "OPENAI_API_KEY" not in outcome.report


def _page(folder: Path, text: str, name: str = "a.md") -> Path:
    page = folder / name
    page.write_text(text)
    return page


# --- links ------------------------------------------------------------------------------------


def _links(page: Path) -> list[tuple[int, str]]:
    found = []
    text = _without_code(page.read_text(encoding="utf-8"))
    for number, line in enumerate(text.splitlines(), 1):
        for match in [*LINK.finditer(line), *IMAGE.finditer(line)]:
            target = match["target"] or match.groupdict().get("src")
            if target and not re.match(r"[a-z][a-z0-9+.-]*:", target):
                found.append((number, target))
    return found


def _without_code(text: str, inline: bool = True) -> str:
    """The page with its code blocks (and inline code) blanked, line numbers kept."""
    out, fence = [], None
    for line in text.splitlines():
        opening = docrun.FENCE.match(line)
        if fence is None and opening:
            fence = opening["fence"]
            out.append("")
        elif fence is not None:
            fence = None if line.strip() == fence else fence
            out.append("")
        else:
            out.append(re.sub(r"`[^`]*`", "", line) if inline else line)
    return "\n".join(out)


def _anchors(page: Path) -> set[str]:
    anchors, seen = set(), {}
    for line in _without_code(page.read_text(encoding="utf-8"), inline=False).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading[1].lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _broken(page: Path) -> list[str]:
    """The page's relative links to no file, or to no heading of a Markdown page."""
    broken = []
    for number, target in _links(page):
        path, _, anchor = unquote(target).partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{docrun.relative(page)}:{number}: {target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
            broken.append(f"{docrun.relative(page)}:{number}: {target} (no such heading)")
    return broken


def _reachable(start: Path) -> set[Path]:
    """The Markdown pages that links lead to from ``start`` (itself included)."""
    reached: set[Path] = set()
    todo = [start.resolve()]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for _, target in _links(page):
            path = unquote(target).partition("#")[0]
            destination = (page.parent / path).resolve() if path else page
            if destination.suffix == ".md" and destination.exists():
                todo.append(destination)
    return reached


@pytest.mark.parametrize("page", READ, ids=docrun.relative)
def test_no_relative_link_is_broken(page: Path) -> None:
    broken = _broken(page)
    assert not broken, "\n".join(broken)


def test_no_docs_page_is_orphaned() -> None:
    """Every page can be reached from the README by following links."""
    reached = _reachable(ROOT / "README.md")
    orphans = [docrun.relative(p) for p in PAGES if p.resolve() not in reached]
    assert not orphans, f"no link leads to: {orphans}"


def test_the_link_checks_catch_what_they_should(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _page(tmp_path, "# Start\n\n[b](sub/b.md#a-heading-with-code) and [c](c.md)\n", "a.md")
    _page(tmp_path, "# Other\n\n## A heading with `code`\n\n[back](../a.md#start)\n", "sub/b.md")
    _page(tmp_path, "# C\n\n[gone](missing.md) [nope](a.md#no-such) `[code](x.md)`\n", "c.md")
    _page(tmp_path, "# Lonely\n", "orphan.md")
    _page(tmp_path, "```markdown\n[in a code block](nowhere.md)\n```\n", "fenced.md")
    assert _broken(tmp_path / "a.md") == _broken(tmp_path / "sub" / "b.md") == []
    assert [line.rpartition(": ")[2] for line in _broken(tmp_path / "c.md")] == [
        "missing.md (no such file)",
        "a.md#no-such (no such heading)",
    ]
    assert _broken(tmp_path / "fenced.md") == []
    names = {p.name for p in _reachable(tmp_path / "a.md")}
    assert names == {"a.md", "b.md", "c.md"}
