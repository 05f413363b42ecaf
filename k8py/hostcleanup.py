"""Stopping everything k8py started on a host, and leaving nothing of it behind: what
`k8py killall` (run by `k8py-killall.sh`) and `k8py lab down` share.

Pods outlive the agent by design (containerd's shims keep them), so stopping the service
stops nothing else. `killall(data_dir)` ends, in order:
1. the k8py server and agent processes (any still running: the service manager normally
   stopped them first);
2. every process in the cgroups of the pods under `<data-dir>/agent/pods` (the containers);
3. every process whose command line names the data directory (our containerd, its shims);
4. every mount under the data directory (container root filesystems, the pods' network
   namespaces pinned by containerd, shared memory), deepest first;
5. the pods' cgroups (and the `k8py` parent where empty);
6. the network k8py made: `cni0`, `flannel.1`, `k8py-dns` (the pods' veths went with their
   namespaces), the routes it added (`ROUTE_PROTOCOL`), and its nftables tables
   (`ip k8py`, the Service proxy's, and `ip k8py-policy`, NetworkPolicy's).
The data directory itself stays: starting k8py again brings the pods back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable

from k8py.agent import cgroups

LINKS = ("cni0", "flannel.1", "k8py-dns")
TABLES = ("k8py", "k8py-policy")
from k8py.net.overlay import ROUTE_PROTOCOL  # the routes the agent adds to other nodes' pods


def kill_holding(path: str) -> None:
    """SIGKILL every process whose command line names `path` (containerd and its shims)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass
    time.sleep(0.2)


def unmount_under(path: str) -> None:
    """Lazily unmount every mount under `path` (rootfs overlays, sandbox shm), deepest first."""
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for mount in sorted((m for m in mounts if m.startswith(path)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def pod_uids(data_dirs: Iterable[str]) -> list[str]:
    """The pods an agent with one of these data directories ran."""
    uids = []
    for data_dir in data_dirs:
        pods = os.path.join(data_dir, "agent", "pods")
        if os.path.isdir(pods):
            uids.extend(os.listdir(pods))
    return uids


def kill_pod_processes(uids: Iterable[str]) -> int:
    """SIGKILL every process in these pods' cgroups; how many."""
    killed = 0
    for uid in uids:
        for pid in cgroups.pod_processes(uid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    if killed:
        time.sleep(0.3)
    return killed


def remove_pod_cgroups(uids: Iterable[str]) -> None:
    for uid in uids:
        cgroups.remove_pod_cgroups(uid)
    for parent in cgroups.hierarchies():
        with contextlib.suppress(OSError):  # another k8py's pods (a lab) may still be there
            os.rmdir(parent)


def k8py_processes() -> list[int]:
    """The k8py server and agent processes on this host (not this one, nor its parents)."""
    own = set()
    pid = os.getpid()
    while pid > 1:
        own.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(") ", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        if int(entry) in own:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        for i, arg in enumerate(argv[:3]):
            runs_k8py = os.path.basename(arg) == "k8py" or (
                arg == "-m" and argv[i + 1:i + 2] == ["k8py"])
            rest = argv[i + (2 if arg == "-m" else 1):]
            if runs_k8py and rest[:1] in (["server"], ["agent"]):
                found.append(int(entry))
                break
    return found


def stop_k8py_processes(timeout: float = 30.0) -> None:
    pids = k8py_processes()
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def remove_network() -> None:
    """k8py's links, routes and nftables tables in this network namespace."""
    for link in LINKS:
        subprocess.run(["ip", "link", "delete", link], check=False, capture_output=True)
    subprocess.run(["ip", "route", "flush", "proto", str(ROUTE_PROTOCOL)], check=False,
                   capture_output=True)
    from k8py.net import nftscript
    from k8py.net.nft import Nft, NftError

    try:
        nft = Nft()
        for table in TABLES:
            nft.run(nftscript.removal(table))
    except NftError:
        pass  # no nftables here: no tables either


def killall(data_dir: str, progress: Callable[[str], None] = print) -> None:
    data_dir = os.path.abspath(data_dir)
    progress("stopping k8py")
    stop_k8py_processes()
    uids = pod_uids([data_dir])
    progress(f"stopping {len(uids)} pods")
    kill_pod_processes(uids)
    kill_holding(data_dir)
    kill_pod_processes(uids)  # anything that started meanwhile
    unmount_under(data_dir)
    remove_pod_cgroups(uids)
    progress("removing k8py's links, routes and nftables tables")
    remove_network()
    progress("k8py and its pods are stopped")
