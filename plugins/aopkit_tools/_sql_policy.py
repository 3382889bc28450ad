"""What SQL a model may run: an authorizer built on allow-lists.

SQLite asks the authorizer about every function a statement calls and every pragma it runs,
by name, while the statement is prepared. Only the names listed here pass, in every mode: a
function that is not listed (``load_extension``, ``fts3_tokenizer``, ones a future SQLite adds)
is refused before anything runs.
"""

from __future__ import annotations

import sqlite3

# Functions that only compute from their arguments (or read the statement's own rows).
FUNCTIONS = frozenset(
    {
        # core scalar functions
        "abs", "char", "coalesce", "concat", "concat_ws", "format", "glob", "hex", "ifnull",
        "iif", "instr", "length", "like", "likelihood", "likely", "lower", "ltrim", "max",
        "min", "nullif", "octet_length", "printf", "quote", "random", "randomblob", "replace",
        "round", "rtrim", "sign", "soundex", "substr", "substring", "trim", "typeof", "unhex",
        "unicode", "unlikely", "upper", "zeroblob",
        # about the connection and the library (no file names)
        "changes", "last_insert_rowid", "total_changes", "sqlite_version", "sqlite_source_id",
        "sqlite_compileoption_get", "sqlite_compileoption_used",
        # aggregate and window functions
        "avg", "count", "group_concat", "string_agg", "sum", "total", "json_group_array",
        "json_group_object", "jsonb_group_array", "jsonb_group_object", "row_number", "rank",
        "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value",
        "last_value", "nth_value",
        # date and time
        "date", "time", "datetime", "julianday", "unixepoch", "strftime", "timediff",
        "current_date", "current_time", "current_timestamp",
        # math
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "ceiling", "cos",
        "cosh", "degrees", "exp", "floor", "ln", "log", "log10", "log2", "mod", "pi", "pow",
        "power", "radians", "sin", "sinh", "sqrt", "tan", "tanh", "trunc",
        # JSON
        "json", "json_array", "json_array_length", "json_error_position", "json_extract",
        "json_insert", "json_object", "json_patch", "json_pretty", "json_quote", "json_remove",
        "json_replace", "json_set", "json_type", "json_valid", "->", "->>", "jsonb",
        "jsonb_array", "jsonb_extract", "jsonb_insert", "jsonb_object", "jsonb_patch",
        "jsonb_remove", "jsonb_replace", "jsonb_set",
        # full-text search: the MATCH operator and the functions that format its hits
        "match", "snippet", "offsets", "matchinfo", "highlight", "bm25",
        # used by SQLite itself inside ALTER TABLE; SQL cannot call them
        "sqlite_rename_column", "sqlite_rename_table", "sqlite_rename_test",
        "sqlite_rename_quotefix", "sqlite_drop_column",
    }
)  # fmt: skip

# Pragmas that only read, with or without an argument. Not database_list (it shows the file's
# location), nor those that change how much memory the connection may use.
READING_PRAGMAS = frozenset(
    {
        "application_id", "auto_vacuum", "collation_list", "compile_options", "data_version",
        "encoding", "foreign_key_check", "foreign_key_list", "foreign_keys", "freelist_count",
        "function_list", "index_info", "index_list", "index_xinfo", "integrity_check",
        "module_list", "page_count", "page_size", "pragma_list", "quick_check",
        "schema_version", "table_info", "table_list", "table_xinfo", "user_version",
    }
)  # fmt: skip

# Pragmas a writable database may also set: they change the data's metadata, not the limits.
WRITING_PRAGMAS = frozenset(
    {
        "application_id", "defer_foreign_keys", "foreign_keys", "incremental_vacuum",
        "optimize", "recursive_triggers", "user_version",
    }
)  # fmt: skip

# Pragmas whose argument names what to describe: given one, they still only read.
_DESCRIBING = frozenset(
    {
        "foreign_key_check", "foreign_key_list", "index_info", "index_list", "index_xinfo",
        "integrity_check", "quick_check", "table_info", "table_list", "table_xinfo",
    }
)  # fmt: skip

# A read-only statement may do only these; a writable one anything but ATTACH and DETACH.
_READING = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_RECURSIVE,
}
_SCHEMA_TABLES = {"sqlite_master", "sqlite_temp_master"}

READ_ONLY = (
    "refused: the database is read-only, and this statement would change it (the program "
    "can allow writes with Database(path, writable=True))"
)
OTHER_FILES = "refused: ATTACH, DETACH and VACUUM INTO are not allowed (they open other files)"


class Policy:
    """The authorizer of one connection; ``refusal`` says why it last refused."""

    def __init__(self, writable: bool) -> None:
        self.writable = writable
        self.refusal: str | None = None

    def authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        refusal = self._judge(action, arg1, arg2)
        if refusal is None:
            return sqlite3.SQLITE_OK
        self.refusal = refusal
        return sqlite3.SQLITE_DENY

    def _judge(self, action: int, arg1: str | None, arg2: str | None) -> str | None:
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return OTHER_FILES
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if name in FUNCTIONS:
                return None
            return f"refused: the SQL function {name}() is not allowed by this tool"
        if action == sqlite3.SQLITE_PRAGMA:
            return self._pragma((arg1 or "").lower(), arg2)
        if self.writable or action in _READING:
            return None
        if action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA_TABLES:
            # SQLite asks this while it sets up a table-valued function (pragma_table_info,
            # json_each); a statement cannot change the schema table itself.
            return None
        return READ_ONLY

    def _pragma(self, name: str, argument: str | None) -> str | None:
        if name in READING_PRAGMAS and (argument is None or name in _DESCRIBING):
            return None
        if self.writable and name in WRITING_PRAGMAS:
            return None
        if not self.writable and name in WRITING_PRAGMAS | READING_PRAGMAS:
            return READ_ONLY
        return f"refused: PRAGMA {name} is not allowed by this tool"
