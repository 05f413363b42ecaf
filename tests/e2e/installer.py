"""What the installer's tests share: release artifacts built once (tools/build_artifacts.py)
and served on loopback, the installer run as users run it (`curl -sfL <url>/install.sh |
sh -s - ...`), and the command and environment its systemd unit would start k8py with (these
hosts run no systemd: the tests start that command themselves)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_artifacts(out: str, arches: str = "x86_64,aarch64,armv7l",
                    pythons: str = "3.11") -> None:
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_artifacts.py"),
                           "--out", out, "--arch", arches, "--python", pythons],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr + done.stdout


@contextlib.contextmanager
def served(directory: str, host: str = "127.0.0.1") -> Iterator[str]:
    """`directory` over HTTP on loopback; its URL."""
    handler = functools.partial(_QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


def install(url: str, args: str, env: dict[str, str], prefix: list[str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """`curl -sfL <url>/install.sh | sh -s - <args>` with `env` added (as root)."""
    command = f"curl -sfL {url}/install.sh | sh -s - {args}"
    return subprocess.run([*(prefix or []), "sh", "-c", command], capture_output=True,
                          text=True, timeout=timeout,
                          env={"PATH": os.environ["PATH"], "HOME": "/root", **env})


def unit_command(unit_path: str) -> tuple[list[str], dict[str, str]]:
    """The ExecStart command of a unit the installer wrote, and the environment of its
    EnvironmentFile."""
    with open(unit_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    command = next(shlex.split(line.split("=", 1)[1]) for line in lines
                   if line.startswith("ExecStart="))
    env: dict[str, str] = {}
    for line in lines:
        if line.startswith("EnvironmentFile="):
            path = line.split("=", 1)[1].lstrip("-")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    env.update(entry.split("=", 1) for entry in f.read().splitlines()
                               if "=" in entry)
    return command, env
