"""Workspace files: confined to the root whatever path a model sends, read-only by default."""

import contextlib
import os
import resource
import stat

import pytest

from aopkit import Toolkit, ToolUseBlock
from aopkit_tools import FileToolError, NotEnabled, PathRefused, ToolsError, Workspace

SECRET = "the secret outside the workspace"


def use(name, **arguments):
    return ToolUseBlock(f"call-{name}", name, arguments)


@pytest.fixture
def root(tmp_path):
    """A workspace with text, binary and nested files, and symbolic links in and out."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    (ws / "notes.txt").write_text("first line\nsecond line with TODO\n")
    (ws / "sub" / "deep.txt").write_text("deep TODO here\n")
    (ws / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary TODO")
    (ws / "escape").symlink_to(outside / "secret.txt")
    (ws / "outdir").symlink_to(outside)
    (ws / "indir").symlink_to(ws / "sub")
    (ws / "inlink").symlink_to(ws / "notes.txt")
    (ws / "loop").symlink_to(ws / "loop")
    return ws


def kit(kernel, workspace):
    return Toolkit(workspace.tools(), kernel=kernel)


HOSTILE = [
    ("../outside/secret.txt", "'..' is refused"),
    ("/etc/passwd", "absolute paths are refused"),
    ("a/../../outside/secret.txt", "'..' is refused"),
    ("escape", "a symbolic link leads outside the workspace"),
    ("outdir/secret.txt", "a symbolic link leads outside the workspace"),
    ("outdir", "a symbolic link leads outside the workspace"),
    ("notes.txt\x00.png", "may not contain NUL bytes"),
    ("x" * 300, "is longer than 255 bytes"),
    ("a/" * 3000, "too long (at most 4096)"),
    ("loop", "symbolic links loop"),
]


@pytest.mark.parametrize(("path", "problem"), HOSTILE)
async def test_hostile_paths_are_refused_by_every_tool(kernel, root, path, problem):
    toolkit = kit(kernel, Workspace(root, writable=True))
    calls = [
        use("read_file", path=path),
        use("list_files", path=path),
        use("search_files", query="secret", path=path),
        use("write_file", path=path, content="pwned"),
    ]
    for call in calls:
        result = await toolkit.call(call)
        assert result.is_error, call.name
        assert result.output.startswith("PathRefused: ") and problem in result.output
        assert SECRET not in result.output and str(root) not in result.output
    assert (root.parent / "outside" / "secret.txt").read_text() == SECRET
    assert not (root.parent / "x").exists()


def test_paths_inside_the_root_resolve_through_links_that_stay_inside(root):
    (root / "sub" / "up").symlink_to("../notes.txt")  # relative, through ".."
    (root / "sub" / "top").symlink_to("..")
    (root / "sub" / "above").symlink_to("../..")
    workspace = Workspace(root)
    assert workspace.read_file("indir/deep.txt") == "deep TODO here\n"
    assert workspace.read_file("inlink") == "first line\nsecond line with TODO\n"
    assert workspace.read_file("./sub//deep.txt") == "deep TODO here\n"
    assert workspace.read_file("sub/up") == "first line\nsecond line with TODO\n"
    assert workspace.read_file("indir/top/sub/deep.txt") == "deep TODO here\n"
    assert workspace.list_files("") == workspace.list_files(".") == workspace.list_files("sub/top")
    for outside in ("outdir/x", "sub/above", "sub/above/outside/secret.txt"):
        with pytest.raises(PathRefused, match="outside the workspace"):
            workspace.read_file(outside)


async def test_read_text_binary_and_large_files_in_parts(kernel, root):
    (root / "long.txt").write_text("é" * 30)  # 60 bytes of two-byte characters
    toolkit = kit(kernel, Workspace(root, max_read=25))
    notes = await toolkit.call(use("read_file", path="notes.txt"))
    assert (
        notes.output
        == "first line\nsecond line wi\n[bytes 0-25 of 33 shown; read on with offset=25]"
    )
    rest = await toolkit.call(use("read_file", path="notes.txt", offset=25))
    assert rest.output == "th TODO\n\n[bytes 25-33 of 33: the end of the file]"
    part = await toolkit.call(use("read_file", path="long.txt"))
    assert part.output == "é" * 12 + "\n[bytes 0-24 of 60 shown; read on with offset=24]"
    middle = await toolkit.call(use("read_file", path="long.txt", offset=25))  # mid-character
    assert middle.output.startswith("é" * 12 + "\n[bytes 26-50 of 60")
    binary = await toolkit.call(use("read_file", path="image.bin"))
    assert not binary.is_error
    assert binary.output == "'image.bin' is a binary file of 21 bytes (not UTF-8 text); not shown"
    linked = await toolkit.call(use("read_file", path="indir/deep.txt"))
    assert linked.output == "deep TODO here\n"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"path": "missing.txt"}, "FileToolError: 'missing.txt': does not exist"),
        ({"path": "sub"}, "FileToolError: 'sub' is a directory; list_files shows what is in it"),
        ({"path": "notes.txt/x"}, "FileToolError: 'notes.txt/x': a part of it is not a directory"),
        ({"path": "notes.txt", "offset": -1}, "FileToolError: offset must be 0 or more, not -1"),
    ],
)
async def test_read_errors_are_clear_and_do_not_show_the_root(kernel, root, arguments, message):
    result = await kit(kernel, Workspace(root)).call(use("read_file", **arguments))
    assert result.is_error and result.output == message


async def test_reading_a_fifo_does_not_hang(kernel, root):
    os.mkfifo(root / "pipe")
    result = await kit(kernel, Workspace(root)).call(use("read_file", path="pipe"))
    assert result.output == "FileToolError: 'pipe' is not a regular file"


async def test_writing_is_off_unless_enabled(kernel, root):
    read_only = Workspace(root)
    assert [t.name for t in read_only.tools()] == ["read_file", "list_files", "search_files"]
    with pytest.raises(NotEnabled, match=r"Workspace\(root, writable=True\)"):
        read_only.write_file("new.txt", "x")
    assert not (root / "new.txt").exists()
    toolkit = kit(kernel, Workspace(root, writable=True, max_write=10))
    done = await toolkit.call(use("write_file", path="made/new.txt", content="hello"))
    assert done.output == "wrote 5 bytes to made/new.txt"
    assert (root / "made" / "new.txt").read_text() == "hello"
    through = await toolkit.call(use("write_file", path="indir/x.txt", content="in"))
    assert through.output == "wrote 2 bytes to sub/x.txt"
    big = await toolkit.call(use("write_file", path="big.txt", content="x" * 11))
    assert big.output == "FileToolError: 'big.txt': the content is 11 bytes; at most 10"
    over_root = await toolkit.call(use("write_file", path=".", content="x"))
    assert over_root.output == "FileToolError: '.': that is the workspace root, not a file"


async def test_list_files(kernel, root):
    toolkit = kit(kernel, Workspace(root))
    top = await toolkit.call(use("list_files"))
    assert top.output.splitlines() == [
        "escape (symbolic link)",
        "image.bin (21 bytes)",
        "indir (symbolic link)",
        "inlink (symbolic link)",
        "loop (symbolic link)",
        "notes.txt (33 bytes)",
        "outdir (symbolic link)",
        "sub/",
    ]
    deep = await toolkit.call(use("list_files", path="sub", recursive=True))
    assert deep.output == "sub/deep.txt (15 bytes)"
    capped = await kit(kernel, Workspace(root, max_entries=2)).call(use("list_files"))
    assert capped.output.splitlines()[-1] == "[stopped at 2 entries; list a subdirectory]"
    not_dir = await toolkit.call(use("list_files", path="notes.txt"))
    assert not_dir.output == "FileToolError: 'notes.txt' is not a directory"
    (root / "empty").mkdir()
    assert (await toolkit.call(use("list_files", path="empty"))).output == "empty is empty"


async def test_search_substring_and_regex_without_leaving_the_root(kernel, root):
    toolkit = kit(kernel, Workspace(root))
    found = await toolkit.call(use("search_files", query="TODO"))
    assert found.output.splitlines() == [
        "inlink:2: second line with TODO",
        "notes.txt:2: second line with TODO",
        "sub/deep.txt:1: deep TODO here",
        "[1 files were not searched: binary, too large or unreadable]",  # links that lead
        # outside the root, or loop, are not files of the workspace: neither searched nor counted
    ]
    regex = await toolkit.call(use("search_files", query=r"^(first|deep)\b", regex=True))
    assert regex.output.splitlines()[:2] == ["inlink:1: first line", "notes.txt:1: first line"]
    secret = await toolkit.call(use("search_files", query="secret"))
    assert secret.output.splitlines()[0] == "no matches for 'secret'"
    one = await toolkit.call(use("search_files", query="line", path="notes.txt"))
    assert one.output == "notes.txt:1: first line\nnotes.txt:2: second line with TODO"
    bad = await toolkit.call(use("search_files", query="(", regex=True))
    assert bad.is_error and "not a valid regular expression" in bad.output
    empty = await toolkit.call(use("search_files", query=""))
    assert empty.output == "FileToolError: the query is empty; give some text to look for"


async def test_search_stops_at_the_match_cap(kernel, root):
    (root / "many.txt").write_text("hit\n" * 100)
    result = await kit(kernel, Workspace(root, max_matches=3)).call(
        use("search_files", query="hit", path="many.txt")
    )
    assert result.output.splitlines() == [
        "many.txt:1: hit",
        "many.txt:2: hit",
        "many.txt:3: hit",
        "[stopped at 3 matches; narrow the search]",
    ]


async def test_the_root_may_come_from_the_environment(kernel, root, monkeypatch):
    monkeypatch.delenv("AOPKIT_WORKSPACE", raising=False)
    toolkit = kit(kernel, Workspace())
    unset = await toolkit.call(use("read_file", path="notes.txt"))
    assert unset.is_error and "AOPKIT_WORKSPACE" in unset.output
    monkeypatch.setenv("AOPKIT_WORKSPACE", str(root))
    assert (await toolkit.call(use("read_file", path="sub/deep.txt"))).output == "deep TODO here\n"
    with pytest.raises(FileToolError, match="is not a directory"):
        Workspace(root / "notes.txt")


def test_schemas_come_from_the_docstrings(root):
    [read, _, search, write] = Workspace(root, writable=True).tools()
    assert read.description.startswith("Read a text file of the workspace.")
    assert read.parameters["properties"]["offset"] == {
        "type": "integer",
        "description": "Where to start, in bytes from the beginning of the file.",
        "default": 0,
    }
    assert search.parameters["required"] == ["query"]
    assert write.parameters["required"] == ["path", "content"]
    assert all(t.thread and t.group == "files" for t in (read, search, write))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda w: w.read_file("bad\ud800.txt"), "PathRefused: 'bad\\ud800.txt': not valid text"),
        (lambda w: w.list_files("\udcff"), "PathRefused: '\\udcff': not valid text"),
        (
            lambda w: w.write_file("new.txt", "text \ud83d alone"),
            "FileToolError: the content is not valid text: a lone surrogate '\\ud83d' at "
            "character 5",
        ),
        (
            lambda w: w.search_files("\udc80"),
            "FileToolError: the query is not valid text: a lone surrogate '\\udc80' at",
        ),
        (
            lambda w: w.read_file("notes.txt", offset=10**30),
            "FileToolError: offset 1000000000000000000000000000000 is past the end of "
            "'notes.txt' (33 bytes)",
        ),
        (lambda w: w.read_file("notes.txt", offset=34), "FileToolError: offset 34 is past"),
        (lambda w: w.read_file("notes.txt", offset=-(10**30)), "FileToolError: offset must be 0"),
        (lambda w: w.read_file("notes.txt", offset="3"), "FileToolError: offset must be a whole"),
        (lambda w: w.read_file("notes.txt", offset=True), "FileToolError: offset must be a whole"),
        (lambda w: w.read_file(None), "PathRefused: a path must be text, not NoneType"),
        (lambda w: w.write_file("x.txt", 5), "FileToolError: the content must be text, not int"),
        (lambda w: w.write_file("sub", "x"), "FileToolError: 'sub' is a directory"),
        (lambda w: w.write_file("indir", "x"), "FileToolError: 'indir' is a directory"),
        (lambda w: w.write_file("sub/deep.txt/x", "x"), "FileToolError: 'sub/deep.txt/x': a part"),
        (lambda w: w.read_file("sub/" + "a" * 256), "PathRefused: 'sub/aaaa"),
    ],
)
def test_hostile_arguments_get_the_tools_own_error(root, call, message):
    with pytest.raises(ToolsError) as failed:
        call(Workspace(root, writable=True))
    assert f"{type(failed.value).__name__}: {failed.value}".startswith(message)


def test_device_files_and_fifos_are_never_opened_for_reading_or_replaced(kernel, root):
    os.mkfifo(root / "pipe")
    os.mknod(root / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # as /dev/zero is
    (root / "devzero").symlink_to("/dev/zero")
    workspace = Workspace(root, writable=True)
    for name in ("pipe", "zero"):
        with pytest.raises(FileToolError, match=f"^'{name}' is not a regular file$"):
            workspace.read_file(name)
        with pytest.raises(FileToolError, match=f"^'{name}' is not a regular file$"):
            workspace.write_file(name, "x")
    with pytest.raises(PathRefused, match="outside the workspace"):
        workspace.read_file("devzero")
    with pytest.raises(FileToolError, match=r"^'pipe' is not a regular file$"):
        workspace.search_files("x", path="pipe")
    assert workspace.search_files("anything").startswith("no matches")
    listing = workspace.list_files()
    assert "pipe (not a regular file)" in listing and "zero (not a regular file)" in listing
    assert stat.S_ISFIFO(os.lstat(root / "pipe").st_mode)


def test_names_that_are_not_utf8_are_listed_with_escapes(root):
    os.close(os.open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), os.O_CREAT | os.O_WRONLY))
    listing = Workspace(root).list_files()
    assert "caf\\xe9.txt (0 bytes)" in listing.splitlines()
    listing.encode("utf-8")  # nothing a model's API would refuse


def test_deep_paths_do_not_run_out_of_file_descriptors(root):
    workspace = Workspace(root, writable=True, max_entries=1000)
    deep = "d/" * 400 + "end.txt"
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, limits[1]))  # fewer than the depth
    try:
        written = workspace.write_file(deep, "bottom")
        read = workspace.read_file(deep)
        listed = workspace.list_files("d", recursive=True).splitlines()
        found = workspace.search_files("bottom").splitlines()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    assert written == f"wrote 6 bytes to {deep}" and read == "bottom"
    assert listed[-1] == f"{deep} (6 bytes)"
    assert found[0] == f"{deep}:1: bottom"


def test_a_replaced_file_keeps_its_permissions(root):
    (root / "private.txt").write_text("old")
    os.chmod(root / "private.txt", 0o600)
    Workspace(root, writable=True).write_file("private.txt", "new")
    assert (root / "private.txt").read_text() == "new"
    assert stat.S_IMODE(os.stat(root / "private.txt").st_mode) == 0o600


async def test_a_root_from_the_environment_is_not_shown_when_wrong(kernel, tmp_path, monkeypatch):
    monkeypatch.setenv("AOPKIT_WORKSPACE", str(tmp_path / "private-location"))
    result = await kit(kernel, Workspace()).call(use("list_files"))
    assert result.output == (
        "FileToolError: the workspace root given by AOPKIT_WORKSPACE is not a directory"
    )


def test_no_call_leaves_a_file_descriptor_open(root):
    (root / "many.txt").write_text("hit\n" * 100)
    workspace = Workspace(root, writable=True, max_matches=3, max_entries=2)
    calls = [
        lambda: workspace.read_file("notes.txt"),
        lambda: workspace.read_file("indir/deep.txt"),
        lambda: workspace.read_file("missing/x"),
        lambda: workspace.read_file("outdir/secret.txt"),
        lambda: workspace.read_file("loop"),
        lambda: workspace.write_file("sub/new.txt", "x"),
        lambda: workspace.write_file("sub", "x"),
        lambda: workspace.list_files(recursive=True),
        lambda: workspace.search_files("hit"),  # stops at the match cap mid-walk
        lambda: workspace.search_files("TODO", path="notes.txt"),
    ]
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        for call in calls:
            with contextlib.suppress(ToolsError):
                call()
    assert len(os.listdir("/proc/self/fd")) == before
