"""What the benchmarks share: a free loopback port, a process's resident memory, and stopping
the server and agent processes they start. (Imported by the scripts in this folder, which
Python puts on the path when one of them runs.)"""

from __future__ import annotations

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
