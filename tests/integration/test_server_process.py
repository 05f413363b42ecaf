"""`k8py server` as a real process: it opens its store, stops cleanly on SIGTERM, and turns an
unusable database into one line and exit code 1."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading

import pytest

from k8py.server.controllers.manager import CONTROLLERS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "k8py", "server", "--data-dir", str(data_dir),
         "--bind-address", "127.0.0.1", "--https-listen-port", str(free_port()),
         "--write-kubeconfig", str(data_dir / "kubeconfig.yaml"), *extra],
        stderr=subprocess.PIPE, text=True,
    )


def wait_for_line(proc, needle, timeout=20.0):
    """The server's stderr until a line holds `needle`; fails after `timeout`: a server that
    logs nothing more is killed by a watchdog then, which ends the blocked read."""
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    seen = []
    try:
        while True:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return seen
    finally:
        watchdog.cancel()
    pytest.fail(f"server never logged {needle!r}; it said: {''.join(seen)}")


def test_server_opens_store_and_stops_on_sigterm(tmp_path):
    proc = start_server(tmp_path, "--disable-agent")
    try:
        wait_for_line(proc, "store ready at revision 0")
        db = tmp_path / "server" / "db" / "state.db"
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=20)[1]
        assert proc.returncode == 0, rest
        assert "store closed" in rest
    finally:
        proc.kill()
        proc.wait()


def test_second_server_on_same_data_dir_is_refused(tmp_path):
    first = start_server(tmp_path, "--disable-agent")
    try:
        wait_for_line(first, "store ready")
        second = start_server(tmp_path, "--disable-agent")
        err = second.communicate(timeout=20)[1]
        assert second.returncode == 1
        assert "in use by another k8py process" in err.strip().splitlines()[-1]
        assert "Traceback" not in err
    finally:
        first.kill()
        first.wait()


@pytest.mark.parametrize("content", [b"garbage" * 1000, b""])
def test_unusable_database_is_one_line_not_a_traceback(tmp_path, content):
    db = tmp_path / "server" / "db" / "state.db"
    db.parent.mkdir(parents=True)
    if content:
        db.write_bytes(content)
    else:  # a SQLite file that belongs to something else
        import sqlite3

        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE other (x)")
    proc = start_server(tmp_path, "--disable-agent")
    err = proc.communicate(timeout=20)[1]
    assert proc.returncode == 1
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("k8py: error:") and "state.db" in last


CONTROLLERS_LINE = f"starting {len(CONTROLLERS)} controllers"
SCHEDULER_LINE = "starting the scheduler"


@pytest.mark.parametrize("flags,wanted", [
    ((), {CONTROLLERS_LINE, SCHEDULER_LINE}),
    (("--disable-controller-manager",), {SCHEDULER_LINE}),
    (("--disable-scheduler",), {CONTROLLERS_LINE}),
])
def test_control_loops_can_be_left_out(tmp_path, flags, wanted):
    """Each component runs once elected on its own lease; a disabled one never starts."""
    proc = start_server(tmp_path, "--disable-agent", *flags)
    try:
        seen: list[str] = []
        for needle in wanted:
            if not any(needle in line for line in seen):
                seen += wait_for_line(proc, needle)
        proc.send_signal(signal.SIGTERM)
        seen += proc.stderr.readlines()
        assert proc.wait(timeout=20) == 0
        for needle in {CONTROLLERS_LINE, SCHEDULER_LINE} - wanted:
            assert not any(needle in line for line in seen), needle
    finally:
        proc.kill()
        proc.wait()
