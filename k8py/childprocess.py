"""What a daemon the server or agent runs as its child (containerd, etcd) shares: it dies with
its parent, and when it fails to start, the last line of its log says why.

`stop` ends one: SIGTERM, then after `timeout` SIGKILL (to its process group when asked:
etcd's; never containerd's, whose shims must outlive it).

`die_with_parent` is given as `preexec_fn`: between fork and exec the child asks the kernel
(prctl PR_SET_PDEATHSIG) for SIGTERM when its parent thread exits, so a killed k8py never
leaves its containerd or etcd behind. The supervisors (`k8py.agent.containerd`,
`k8py.server.embeddedetcd`) start them in their own session and stop them themselves on a
clean exit; this covers the unclean one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def last_log_line(log_path: str) -> str:
    """The log's last non-empty line (from its final 4 KiB), "" if there is none."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(log_path) - 4096))
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line]
    except OSError:
        return ""
    return lines[-1] if lines else ""


async def stop(proc: asyncio.subprocess.Process, timeout: float, name: str, *,
               kill_group: bool = False) -> None:
    """SIGTERM, then SIGKILL after `timeout` (the process group's with `kill_group`)."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(timeout):
            await proc.wait()
    except asyncio.TimeoutError:
        log.warning("%s did not stop within %.0fs: killing it", name, timeout)
        with contextlib.suppress(ProcessLookupError):
            if kill_group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        await proc.wait()
    log.info("%s stopped", name)
