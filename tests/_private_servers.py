"""Private PostgreSQL and MariaDB servers for fault tests: started, stopped and killed at will.

Each lives in its own temporary directory on 127.0.0.1 and a free port, so a test can restart
it or end every session without touching the machine's shared servers (others' tests run
against those). ``stop_and_remove()`` always runs (the fixtures call it in ``finally``): the
server is stopped, killed if it will not stop, and its directory removed.

PostgreSQL's initdb and pg_ctl refuse to run as root, so as root they run as the ``postgres``
OS user (``runuser``), in a directory that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["PrivateMariaDB", "PrivatePostgres", "ServerUnavailable", "free_port"]


class ServerUnavailable(Exception):
    """The binaries (or the OS user) a private server needs are missing: the test skips."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.02)


class PrivatePostgres:
    """A PostgreSQL cluster of its own (trust auth, user postgres, database postgres)."""

    name = "PostgreSQL"

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        found = shutil.which("initdb")
        initdb = bins[-1] if bins else found
        if initdb is None:
            raise ServerUnavailable("PostgreSQL's initdb is not installed "
                                    "(looked in /usr/lib/postgresql/*/bin and PATH)")
        self.bin = Path(initdb).parent
        self.as_user: list[str] = []
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable("running as root needs a 'postgres' OS user for "
                                        "initdb") from None
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ServerUnavailable("running as root needs runuser to start PostgreSQL")
            self.as_user = [runuser, "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="poolkeeper-pg-"))
        if owner is not None:
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.data = self.dir / "data"
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self.as_user, str(self.bin / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=40 -c shared_buffers=16MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                  "-t", "30", "-o", options, "start")
        _wait_for(lambda: _accepting(self.port), 10, f"private PostgreSQL on {self.port}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop_and_remove(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class PrivateMariaDB:
    """A MariaDB server of its own (root without a password, database test)."""

    name = "MariaDB"

    def __init__(self) -> None:
        install = shutil.which("mariadb-install-db")
        server = shutil.which("mariadbd") or (
            "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
        if install is None or server is None:
            raise ServerUnavailable("MariaDB's mariadb-install-db and mariadbd are not "
                                    "installed")
        self.server = server
        self.dir = Path(tempfile.mkdtemp(prefix="poolkeeper-mariadb-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None
        cmd = [install, "--no-defaults", f"--datadir={self.data}",
               "--auth-root-authentication-method=normal", "--skip-test-db"]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"mariadb-install-db failed ({done.returncode}): "
                               f"{done.stderr[-2000:]}")

    @property
    def dsn(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/test"

    def start(self) -> None:
        cmd = [self.server, "--no-defaults", f"--datadir={self.data}",
               f"--socket={self.dir / 'sock'}", f"--port={self.port}",
               "--bind-address=127.0.0.1", f"--pid-file={self.dir / 'pid'}", "--skip-log-bin",
               "--innodb-buffer-pool-size=16M", "--max-connections=40", "--skip-name-resolve"]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        with open(self.dir / "err.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _wait_for(lambda: _accepting(self.port) or self.proc is None
                  or self.proc.poll() is not None, 30, f"private MariaDB on {self.port}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"mariadbd exited ({self.proc.returncode}): "
                               f"{(self.dir / 'err.log').read_text()[-2000:]}")
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root")
        try:
            conn.cursor().execute("CREATE DATABASE IF NOT EXISTS test")
        finally:
            conn.close()

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown (SIGTERM); ``immediate``: SIGKILL, like a crash."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM if mode == "fast" else signal.SIGKILL)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        _wait_for(lambda: not _accepting(self.port), 10, f"MariaDB on {self.port} stopping")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop_and_remove(self) -> None:
        try:
            if self.proc is not None:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
