"""What the benchmarks share: a free loopback port, a process's resident memory, stopping
the server and agent processes they start, and a network namespace of their own. (Imported by the scripts in this folder, which
Python puts on the path when one of them runs.)"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """The process's resident memory (VmRSS) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stop_process(proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def netns(name: str):
    """A new network namespace that this thread enters; left and deleted afterwards."""
    from tools.netns import inside  # the scripts put the checkout on the path first

    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with inside(name):
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)
