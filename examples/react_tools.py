"""A ReAct agent with tools: it reads a file, queries SQLite and runs Python to answer.

The workspace holds a note, the database holds orders, and code execution is switched on for
this run (it is off by default). Run it with a real model
(`python react_tools.py openai:gpt-4o-mini`) or with no argument for a scripted run. The
conversation, tool calls included, is shown as it happens.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
from pathlib import Path

import aopkit
from aopkit.blocks import ToolResultBlock, ToolUseBlock
from aopkit_tools import CodeExecutor, Database, Workspace

SCRIPT = [
    [ToolUseBlock("c1", "read_file", {"path": "note.txt"})],
    [
        ToolUseBlock(
            "c2",
            "sql_query",
            {"sql": "SELECT SUM(amount) FROM orders WHERE region = ?", "params": ["north"]},
        )
    ],
    [ToolUseBlock("c3", "execute_python", {"code": "print(round(1250 * 1.2))"})],
    "The north region sold 1250; with the 20% growth the note expects, that is 1500.",
]


def prepare(root: Path) -> tuple[Path, Path]:
    workspace = root / "workspace"
    workspace.mkdir()
    (workspace / "note.txt").write_text("Forecast: the north region grows 20% next quarter.\n")
    db = root / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (region TEXT, amount INTEGER)")
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?)", [("north", 1000), ("north", 250), ("south", 700)]
        )
    conn.close()
    return workspace, db


async def main(model_name: str | None) -> list[str]:
    """The tools' results and the answer, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        workspace, db = prepare(Path(tmp))
        async with aopkit.Kernel() as kernel:
            aopkit.show_chat(kernel)
            tools = [
                *Workspace(workspace).tools(),
                *Database(db).tools(),
                *CodeExecutor(enabled=True, timeout=20).tools(),
            ]
            scripted = {} if model_name else {"responses": SCRIPT}  # it says what it is given
            model = kernel.model(model_name or "scripted:analyst", **scripted)
            analyst = aopkit.ReActAgent(
                "analyst",
                model,
                tools=tools,
                sys_prompt="Answer with the tools: read note.txt, query the orders table "
                "(region, amount), and compute with Python.",
            )
            reply = await analyst("What will the north region sell next quarter?")
        results = [b.output for m in analyst.memory for b in m.blocks(ToolResultBlock)]
        return [*map(str, results), reply.text]


if __name__ == "__main__":
    print(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else None))[-1])
