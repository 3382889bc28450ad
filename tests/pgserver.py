"""A real PostgreSQL server for the tests: Debian's binaries, a fresh cluster in a temporary
directory, listening only on a Unix socket there, password login required.

PostgreSQL refuses to run as root: when the tests run as root (CI containers), the server runs
as ``nobody`` (``setpriv``, no PAM needed) and owns its directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

USER = "aopkit"


def binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # a link on PATH leads to the version directory
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


class PostgresServer:
    """One cluster: :meth:`start`, :meth:`stop` (and start again), :meth:`dsn` of a database."""

    def __init__(self) -> None:
        bindir = binaries()
        if bindir is None:
            pytest.skip("PostgreSQL is not installed (Debian package 'postgresql')")
        self.bin = bindir
        self.password = secrets.token_urlsafe(16)
        self.root = Path(tempfile.mkdtemp(prefix="aopkit-pg-", dir="/tmp"))  # short socket path
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody", "nogroup")
            self.as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        if self.as_user:
            shutil.chown(pwfile, "nobody", "nogroup")
        self._run(
            "initdb",
            "-D",
            self.data,
            "-U",
            USER,
            "--pwfile",
            pwfile,
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        pwfile.unlink()

    def _run(self, tool: str, *args: object) -> None:
        command = [*self.as_user, str(self.bin / tool), *map(str, args)]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr or done.stdout}")

    def start(self) -> None:
        options = (
            f"-k {self.root} -c listen_addresses='' -c fsync=off -c max_connections=300 "
            "-c shared_buffers=16MB"
        )
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", self.root / "log", "-w", "start")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already stopped
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str = "postgres", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{USER}:{secret}@/{database}?host={self.root}"

    def create_database(self) -> str:
        """A new empty database; its DSN."""
        name = f"t_{secrets.token_hex(6)}"
        env = {**os.environ, "PGPASSWORD": self.password}
        subprocess.run(
            [self.bin / "createdb", "-h", self.root, "-U", USER, name],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        return self.dsn(name)
