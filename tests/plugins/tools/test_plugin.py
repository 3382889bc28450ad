"""The tools through the plugin hook (safe by default), and a ReAct agent using each kind."""

import sqlite3

import pytest

import aopkit_tools
from aopkit import Msg, ReActAgent, Toolkit, ToolResultBlock, ToolUseBlock
from aopkit_tools import CodeExecutor, Database, Workspace

REGISTERED = ["execute_python", "sql_query", "read_file", "list_files", "search_files"]


@pytest.fixture
def data(tmp_path):
    """A workspace with one note, and a database of two products."""
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "note.txt").write_text("Order more tea.\n")
    db = sqlite3.connect(tmp_path / "shop.db")
    with db:
        db.execute("CREATE TABLE products (name TEXT, price REAL)")
        db.executemany("INSERT INTO products VALUES (?, ?)", [("tea", 3.5), ("cake", 2.0)])
    db.close()
    return tmp_path


@pytest.fixture
def plugged(kernel):
    """The kernel with this plugin, registered by hand until the lead adds its entry point."""
    if not kernel.pm.is_registered(aopkit_tools):
        kernel.register(aopkit_tools, "tools")
    return kernel


def call(name, call_id, **arguments):
    return ToolUseBlock(call_id, name, arguments)


async def test_registered_tools_are_safe_by_default(plugged, data, monkeypatch):
    monkeypatch.delenv("AOPKIT_ENABLE_CODE_EXECUTION", raising=False)
    monkeypatch.setenv("AOPKIT_WORKSPACE", str(data / "ws"))
    monkeypatch.setenv("AOPKIT_DATABASE", str(data / "shop.db"))
    assert sorted(plugged.tools.names_of("tools")) == sorted(REGISTERED), "no write_file"
    toolkit = Toolkit(kernel=plugged)
    toolkit.add_registered(*REGISTERED)
    code = await toolkit.call(call("execute_python", "c1", code="print(1)"))
    assert code.is_error and "code execution is off" in code.output
    read = await toolkit.call(call("read_file", "c2", path="note.txt"))
    assert read.output == "Order more tea.\n"
    write = await toolkit.call(call("sql_query", "c3", sql="DELETE FROM products"))
    assert write.is_error and "read-only" in write.output
    select = await toolkit.call(call("sql_query", "c4", sql="SELECT count(*) AS n FROM products"))
    assert select.output.splitlines()[2] == "2"
    outside = await toolkit.call(call("read_file", "c5", path="../shop.db"))
    assert outside.is_error and "PathRefused" in outside.output


async def test_a_react_agent_calls_a_tool_of_each_kind(kernel, data):
    workspace, database = Workspace(data / "ws"), Database(data / "shop.db")
    executor = CodeExecutor(enabled=True, timeout=5)
    toolkit = Toolkit([*workspace.tools(), *database.tools(), *executor.tools()], kernel=kernel)
    model = kernel.model(
        "scripted:brain",
        responses=[
            [
                call("read_file", "c1", path="note.txt"),
                call(
                    "sql_query",
                    "c2",
                    sql="SELECT price FROM products WHERE name = ?",
                    params=["tea"],
                ),
                call("execute_python", "c3", code="print(3.5 * 4)"),
            ],
            "Four teas cost 14.0.",
        ],
    )
    agent = ReActAgent("shopper", model, toolkit=toolkit, kernel=kernel)
    reply = await agent(Msg("user", "What do four teas cost?", "user"))
    database.close()
    assert reply.text == "Four teas cost 14.0."
    results = {b.id: b for m in agent.memory for b in m.blocks(ToolResultBlock)}
    assert not any(r.is_error for r in results.values())
    assert results["c1"].output == "Order more tea.\n"
    assert results["c2"].output == "price\n-----\n3.5\n(1 rows)"
    assert results["c3"].output == "exit code 0\n--- stdout ---\n14.0"
    shown = {spec.name for spec in model.calls[0]["tools"]}
    assert shown == {"read_file", "list_files", "search_files", "sql_query", "execute_python"}
