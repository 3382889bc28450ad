"""Other programs renaming things in the root while the tools run: nothing leaks, nothing is
written outside, no reader sees a half-written file, a killed writer loses nothing."""

import ctypes
import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from aopkit_tools import FileToolError, PathRefused, ToolsError, Workspace
from aopkit_tools import files as files_module

SECRET = "the secret outside the workspace"
RENAME_EXCHANGE = 2
SECONDS = 2.5  # per race: long enough for tens of thousands of swaps

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux renameat2"),
]


def exchange(a, b):
    """Swap two names atomically (renameat2 with RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE):
        raise OSError(ctypes.get_errno(), "renameat2")


class Swapper(threading.Thread):
    """Swaps two names in a tight loop until stopped; counts the swaps."""

    def __init__(self, a, b):
        super().__init__(daemon=True)
        self.a, self.b = a, b
        self.swaps = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            exchange(self.a, self.b)
            self.swaps += 1

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        self.join()


@pytest.fixture
def places(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (outside / "file.txt").write_text(SECRET)  # the same name as a file inside
    root = tmp_path / "ws"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "file.txt").write_text("public")
    (root / "file.txt").write_text("public")
    (root / "link.txt").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside)
    return root, outside


def hammer(call, seconds=SECONDS):
    """Call ``call`` until the time is up; the answers, errors as their text."""
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            answers.append(call())
        except ToolsError as exc:
            answers.append(f"{type(exc).__name__}: {exc}")
    return answers


def test_a_file_swapped_with_a_link_to_outside_never_leaks(places):
    root, _ = places
    workspace = Workspace(root)
    with Swapper(root / "file.txt", root / "link.txt") as swapper:
        reads = hammer(lambda: workspace.read_file("file.txt"))
        searches = hammer(lambda: workspace.search_files("secret"), seconds=1)
    assert swapper.swaps > 1000 and len(reads) > 1000
    assert not [a for a in reads + searches if SECRET in a]
    assert "public" in reads  # the tool kept working between the swaps
    assert set(reads) <= {
        "public",
        "PathRefused: 'file.txt': a symbolic link leads outside the workspace; refused",
        "FileToolError: 'file.txt': does not exist",  # caught between unlink and link
        "FileToolError: 'file.txt': it changed into a symbolic link while it was opened; try again",
    }


def test_a_directory_swapped_with_a_link_to_outside_never_leads_a_write_outside(places):
    root, outside = places
    workspace = Workspace(root, writable=True)
    count = iter(range(10**9))
    with Swapper(root / "dir", root / "dirlink") as swapper:
        writes = hammer(lambda: workspace.write_file(f"dir/new-{next(count)}.txt", "x"))
        reads = hammer(lambda: workspace.read_file("dir/file.txt"), seconds=1)
    assert swapper.swaps > 1000 and len(writes) > 500
    assert sorted(os.listdir(outside)) == ["file.txt", "secret.txt"]
    assert not [a for a in reads if SECRET in a]
    written = [a for a in writes if a.startswith("wrote")]
    inside = next(p for p in (root / "dir", root / "dirlink") if not p.is_symlink())
    assert written and len(written) == len(list(inside.glob("new-*.txt")))


def test_readers_see_the_old_or_the_new_content_never_a_part(places):
    root, _ = places
    versions = ["a" * 100_000, "b" * 50_000]
    workspace = Workspace(root, writable=True, max_read=200_000)
    workspace.write_file("shared.txt", versions[0])
    stop = threading.Event()

    def writer():
        turn = 0
        while not stop.is_set():
            turn += 1
            workspace.write_file("shared.txt", versions[turn % 2])

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reads = hammer(lambda: workspace.read_file("shared.txt"))
    finally:
        stop.set()
        thread.join()
    assert len(reads) > 200
    assert set(reads) == set(versions)
    assert not [p for p in root.iterdir() if p.name.endswith(".aopkit-tmp")]


def test_a_failed_write_keeps_the_old_content_and_leaves_nothing(places, monkeypatch):
    root, _ = places
    workspace = Workspace(root, writable=True)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", full)
    with pytest.raises(FileToolError, match=r"^'file.txt': no space left$"):
        workspace.write_file("file.txt", "new content")
    assert (root / "file.txt").read_text() == "public"
    assert sorted(p.name for p in root.iterdir()) == ["dir", "dirlink", "file.txt", "link.txt"]


def test_a_writer_killed_mid_write_leaves_the_old_or_the_new_file(places):
    root, _ = places
    (root / "big.txt").write_text("a" * 2_000_000)
    child = textwrap.dedent(
        f"""
        from aopkit_tools import Workspace
        workspace = Workspace({str(root)!r}, writable=True, max_write=10_000_000)
        turn = 0
        print("ready", flush=True)
        while True:
            turn += 1
            workspace.write_file("big.txt", "ab"[turn % 2] * 2_000_000)
        """
    )
    for delay in (0.05, 0.2, 0.5):
        writer = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE)
        assert writer.stdout.readline() == b"ready\n"
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        assert (root / "big.txt").read_text() in ("a" * 2_000_000, "b" * 2_000_000)
    leftovers = [p.name for p in root.iterdir() if p.name.endswith(".aopkit-tmp")]
    assert len(leftovers) <= 3  # a killed writer may leave its temporary file, never a torn one


def test_a_link_loop_built_during_the_walk_ends(places):
    root, _ = places
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    with pytest.raises(PathRefused, match="symbolic links loop"):
        Workspace(root).read_file("a/x")
