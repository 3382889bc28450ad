"""Line-per-record files (incidents, traces): a torn or garbage line costs only itself."""

import json
import signal
import subprocess
import sys
import threading
from subprocess import PIPE

import pytest

from aopkit import JsonlTrace, Kernel, Msg
from aopkit.events import MessageSent
from aopkit.faults import IncidentStore, SkippedLine

pytestmark = pytest.mark.processes  # see the marker in pyproject.toml


def incident(n):
    return {"id": f"inc-{n}", "model": "m", "reason": "r" * 50, "outputs": [], "resolution": None}


DAMAGE = {
    "a torn line": b'{"id": "inc-x", "model": "m", "rea',
    "binary garbage": b"\x00\xff\xfe\x80garbage",
    "not an object": b"[1, 2, 3]",
    "no id": b'{"model": "m"}',
    "a resolution of nothing": b'{"id": "inc-none", "resolution": "abort"}',
    "nested too deeply": b"[" * 100_000,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_line_is_skipped_and_reported_and_every_intact_incident_kept(tmp_path, damage):
    store = IncidentStore(tmp_path / "incidents.jsonl")
    store.append(incident(1))
    with open(store.path, "ab") as f:
        f.write(DAMAGE[damage] + b"\n")
    store.append(incident(2))
    store.append({"id": "inc-1", "resolution": "answer"})
    loaded = store.load()
    assert [i["id"] for i in loaded] == ["inc-1", "inc-2"]
    assert loaded[0]["resolution"] == "answer"
    assert [s.number for s in store.skipped] == [2]
    assert store.skipped[0].problem


def test_an_append_after_a_torn_last_line_starts_a_new_line(tmp_path):
    """A killed writer leaves half a line and no newline: the next incident must not fuse
    with it (and be lost with it)."""
    store = IncidentStore(tmp_path / "incidents.jsonl")
    store.append(incident(1))
    with open(store.path, "ab") as f:
        f.write(b'{"id": "inc-torn", "mod')
    store.append(incident(2))
    assert [i["id"] for i in store.load()] == ["inc-1", "inc-2"]
    assert store.skipped == [SkippedLine(2, store.skipped[0].problem)]


def test_a_lone_surrogate_in_an_incident_does_not_break_the_file(tmp_path):
    store = IncidentStore(tmp_path / "incidents.jsonl")
    store.append({**incident(1), "reason": "bad \ud800 text"})
    store.append(incident(2))
    assert [i["id"] for i in store.load()] == ["inc-1", "inc-2"]
    assert store.skipped == []


def test_concurrent_appends_from_threads_are_all_kept_whole(tmp_path):
    path = tmp_path / "incidents.jsonl"

    def writer(w):
        store = IncidentStore(path)
        for n in range(25):
            store.append({**incident(f"{w}-{n}"), "outputs": ["o" * 5000]})

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = IncidentStore(path)
    assert len(store.load()) == 150 and store.skipped == []


APPENDER = """
import sys
from aopkit.faults import IncidentStore
store = IncidentStore(sys.argv[1])
n = 0
while True:
    n += 1
    store.append({"id": f"inc-{sys.argv[2]}-{n}", "outputs": ["o" * 200_000]})
    print(n, flush=True)
"""


def test_sigkill_mid_append_costs_at_most_the_line_being_written(tmp_path):
    path = tmp_path / "incidents.jsonl"
    written = 0
    for kill in range(5):
        with subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(path), str(kill)], stdout=PIPE
        ) as child:
            assert child.stdout is not None
            child.stdout.readline()
            child.stdout.readline()
            child.send_signal(signal.SIGKILL)
            child.wait()
            written += 2 + len(child.stdout.read().split())
    store = IncidentStore(path)
    loaded = store.load()
    assert len(loaded) >= written and len(store.skipped) <= 5


def test_a_trace_reopened_after_a_torn_line_starts_a_new_line(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"type": "message_sent", "msg": {"na')
    kernel = Kernel(environ={})
    trace = JsonlTrace(path)
    trace.event(MessageSent(msg=Msg("a", "hello", "user")), kernel)
    trace.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["msg"]["content"] == "hello"
