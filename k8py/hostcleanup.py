"""Stopping everything k8py started on a host, and leaving nothing of it behind: what
`k8py killall` (run by `k8py-killall.sh`) and `k8py lab down` share.

Pods outlive the agent by design (containerd's shims keep them), so stopping the service
stops nothing else. `killall(data_dir)` ends, in order:
1. the k8py server and agent processes of that data directory (any still running: the
   service manager normally stopped them first);
2. every process in the cgroups of the pods under `<data-dir>/agent/pods` (the containers);
3. our containerd and its shims (their command lines name the data directory or its
   containerd socket), and that socket;
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


def holding(path: str) -> list[int]:
    """The processes (not this one) whose command line names `path`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def kill_holding(path: str) -> None:
    """SIGKILL every process whose command line names `path` (containerd and its shims)."""
    for pid in holding(path):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)


def kill_runtime(data_dir: str) -> None:
    """SIGKILL the containerd of an agent's data dir and its shims (whose command lines name
    the data dir, or the socket, which for a long data dir path lives in /run/k8py), and
    remove that socket."""
    from k8py.agent import containerd

    kill_holding(data_dir)
    socket = containerd.socket_path(data_dir)
    if not socket.startswith(os.path.abspath(data_dir) + os.sep):
        kill_holding(socket)
        for path in (socket, socket + ".ttrpc"):
            with contextlib.suppress(OSError):
                os.remove(path)


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


DEFAULT_DATA_DIR = "/var/lib/k8py"


def k8py_processes(data_dir: str) -> list[int]:
    """The k8py server and agent processes on this host that use `data_dir` (by their
    --data-dir/-d flag, else K8PY_DATA_DIR, else the default), not this one nor its
    parents."""
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
        args = _k8py_arguments(argv)
        if args is None or args[:1] not in (["server"], ["agent"]):
            continue
        if os.path.abspath(_data_dir_of(int(entry), args)) == os.path.abspath(data_dir):
            found.append(int(entry))
    return found


def _k8py_arguments(argv: list[str]) -> list[str] | None:
    """What follows `k8py` (or `python -m k8py`) in a command line; None if it is not k8py."""
    for i, arg in enumerate(argv[:3]):
        if os.path.basename(arg) == "k8py":
            return argv[i + 1:]
        if arg == "-m" and argv[i + 1:i + 2] == ["k8py"]:
            return argv[i + 2:]
    return None


def _data_dir_of(pid: int, args: list[str]) -> str:
    for i, arg in enumerate(args):
        if arg.startswith("--data-dir="):
            return arg.split("=", 1)[1]
        if arg in ("--data-dir", "-d") and i + 1 < len(args):
            return args[i + 1]
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"K8PY_DATA_DIR="):
                    return item.split(b"=", 1)[1].decode(errors="replace")
    except OSError:
        pass
    return DEFAULT_DATA_DIR


def stop_k8py_processes(data_dir: str, timeout: float = 30.0) -> None:
    terminate(k8py_processes(data_dir), timeout)


def terminate(pids: list[int], timeout: float = 30.0, group: bool = False) -> None:
    """SIGTERM to each process (its process group with `group`), SIGKILL to those still
    alive after `timeout` seconds."""
    send = os.killpg if group else os.kill
    for pid in pids:
        with contextlib.suppress(OSError):
            send(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(OSError):
                send(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
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
    stop_k8py_processes(data_dir)
    uids = pod_uids([data_dir])
    progress(f"stopping {len(uids)} pods")
    kill_pod_processes(uids)
    kill_runtime(data_dir)
    kill_pod_processes(uids)  # anything that started meanwhile
    unmount_under(data_dir)
    remove_pod_cgroups(uids)
    progress("removing k8py's links, routes and nftables tables")
    remove_network()
    progress("k8py and its pods are stopped")
