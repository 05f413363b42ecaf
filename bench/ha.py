"""High-availability benchmark: leader failover between real `k8py server` processes on an
embedded etcd, server memory with the embedded etcd beside SQLite, and an etcd snapshot and
restore through the CLI. Needs Debian's etcd (`/usr/bin/etcd`).

    .venv/bin/python bench/ha.py [--rounds 3] [--objects 1000] [--snapshot-objects 10000]
                                 [--idle 15] [--no-failover] [--no-memory] [--no-snapshot]

Every server runs on loopback with its own ports and data dir under a temp folder, with
`--disable-agent` (the agent needs containerd and the host's network: its memory is
`bench/podstart.py`'s figure). Figures:

1. Failover: three servers (`--cluster-init`, two joining with `--server/--token`: etcd keeps
   its quorum when one goes). Each round takes the server holding
   `kube-system/kube-controller-manager` and either
   - stops it (SIGTERM: it releases its leases on the way out), or
   - SIGKILLs it and its etcd at once (a host crash: its leases must expire, and the etcd
     leader may have to be elected again),
   then, through a surviving server, scales a ReplicaSet by two. Timed from the signal: until
   a surviving server holds each Lease the victim held (`kube-controller-manager`,
   `kube-scheduler`), and until the ReplicaSet's new pods exist (the new leader's controllers
   acting). The victim is restarted from its data before the next round. Median and max.
2. Memory: one fresh server on the embedded etcd, then one on SQLite: resident memory
   (VmRSS) of the k8py process and of its etcd child, idle after start and after `--objects`
   ConfigMaps of 1 KiB (each after `--idle` seconds).
3. Snapshot: that etcd server filled to `--snapshot-objects` ConfigMaps, `k8py etcd-snapshot
   save` beside it; then, stopped, `k8py server --cluster-reset --cluster-reset-restore-path`,
   and the restart until its API answers with every object.

Every process started here (servers, their etcd children) is stopped at the end, also on
Ctrl-C, SIGTERM or an error; the temp folder is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchlib import free_port, rss_mb, stop_process  # noqa: E402
from k8py.api import errors  # noqa: E402
from k8py.api.resources import builtin  # noqa: E402
from k8py.client.client import Client  # noqa: E402
from k8py.client.http import HttpTransport  # noqa: E402

LEASES = builtin("coordination.k8s.io/v1", "leases")
REPLICASETS = builtin("apps/v1", "replicasets")
PODS = builtin("v1", "pods")
CONFIGMAPS = builtin("v1", "configmaps")
ELECTED = ("kube-controller-manager", "kube-scheduler")
BECAME_LEADER = re.compile(r"(\S+) became leader of kube-system/(\S+)")
READY_LINE = "wrote admin kubeconfig"
CALL_TIMEOUT = 5.0  # one API call; a server whose etcd lost its leader may hang longer


class Server:
    """One `k8py server` process; its log in `<dir>/server.log`."""

    def __init__(self, root: str, name: str, *extra: str):
        self.name, self.extra = name, list(extra)
        self.data_dir = os.path.join(root, name)
        os.makedirs(self.data_dir, exist_ok=True)
        self.api_port, self.client_port, self.peer_port = free_port(), free_port(), free_port()
        self.kubeconfig = os.path.join(self.data_dir, "kubeconfig.yaml")
        self.log_path = os.path.join(self.data_dir, "server.log")
        self.proc: subprocess.Popen | None = None
        self.etcd_pids: set[int] = set()  # every etcd child it ever had, to end them all
        self._client: Client | None = None

    async def start(self, timeout: float = 180.0) -> float:
        """Starts it; returns the seconds until it wrote its kubeconfig (its API serves)."""
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "k8py", "server", "--data-dir", self.data_dir,
                 "--node-name", self.name, "--node-ip", "127.0.0.1",
                 "--bind-address", "127.0.0.1", "--https-listen-port", str(self.api_port),
                 "--etcd-client-port", str(self.client_port),
                 "--etcd-peer-port", str(self.peer_port),
                 "--write-kubeconfig", self.kubeconfig, "--disable-agent", *self.extra],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        while READY_LINE not in self.log_since(offset):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): "
                                   f"{self.log_since(offset)[-2000:]}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s")
            await asyncio.sleep(0.1)
        took = time.monotonic() - started
        pid = self.etcd_pid()
        if pid:
            self.etcd_pids.add(pid)
        return took

    def log_since(self, offset: int = 0) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def etcd_pid(self) -> int | None:
        try:
            with open(os.path.join(self.data_dir, "server", "db", "etcd.pid")) as f:
                return int(f.read())
        except (FileNotFoundError, ValueError):
            return None

    def identities(self) -> set[str]:
        """The leader-election identities it has logged winning with."""
        return {m.group(1) for m in BECAME_LEADER.finditer(self.log_since())}

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(HttpTransport.from_kubeconfig(self.kubeconfig))
        return self._client

    async def drop_client(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def rss(self) -> tuple[float, float]:
        """(k8py process, its etcd child) VmRSS in MB."""
        pid = self.etcd_pid() if self.etcd_pids else None
        return rss_mb(self.proc.pid), (rss_mb(pid) if pid and alive(pid) else 0.0)

    def kill_with_etcd(self) -> None:
        """SIGKILL of the server and of its etcd (its own process group), as a host crash."""
        pid = self.etcd_pid()
        self.proc.kill()
        if pid and alive(pid):
            os.killpg(pid, signal.SIGKILL)

    def stop(self) -> None:
        stop_process(self.proc)
        for pid in self.etcd_pids:  # etcd stops with its server; make sure of it
            wait_gone(pid, 30)
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    """The process exists, is not a zombie, and is an etcd (a reused pid is left alone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"etcd" in f.read()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


async def call(awaitable):
    return await asyncio.wait_for(awaitable, CALL_TIMEOUT)


async def holders(server: Server) -> dict[str, str]:
    found = {}
    for name in ELECTED:
        try:
            lease = await call(server.client.get(LEASES, name, "kube-system"))
            found[name] = (lease.get("spec") or {}).get("holderIdentity") or ""
        except errors.NotFound:
            found[name] = ""
    return found


async def until(condition, timeout: float, what: str):
    """Polls `condition()` (async) until truthy; API errors count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = await condition()
            if got:
                return got
        except (errors.StatusError, OSError, asyncio.TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


def figures(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (f"median {statistics.median(values):5.2f}s  max {max(values):5.2f}s  "
            f"(n={len(values)})")


# -- 1. failover --------------------------------------------------------------------------

async def failover(root: str, rounds: int, servers: list[Server]) -> None:
    first = Server(root, "ha1", "--cluster-init")
    servers.append(first)
    took = await first.start()
    print(f"  ha1 (--cluster-init) ready in {took:.1f}s")
    with open(os.path.join(first.data_dir, "server", "token")) as f:
        token = f.read().strip()
    for name in ("ha2", "ha3"):
        joining = Server(root, name, "--server", f"https://127.0.0.1:{first.api_port}",
                         "--token", token)
        servers.append(joining)
        took = await joining.start()
        print(f"  {name} (joined) ready in {took:.1f}s")
    group = list(servers)
    await until(lambda: leaders_known(group), 60, "both leases held")
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "ha-bench", "namespace": "default"},
          "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "ha-bench"}},
                   "template": {"metadata": {"labels": {"app": "ha-bench"}},
                                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    await call(first.client.create(REPLICASETS, rs, "default"))
    replicas = 0
    results: dict[str, dict[str, list[float]]] = {}
    for how in ("SIGTERM", "SIGKILL"):
        timings = results[how] = {name: [] for name in (*ELECTED, "pods")}
        for number in range(rounds):
            replicas += 2
            got = await one_round(group, how, replicas)
            for key, value in got.items():
                timings[key].append(value)
            print(f"  {how} round {number + 1}: " + ", ".join(
                f"{key} {value:.2f}s" for key, value in got.items()))
    print("failover (seconds from the signal to a surviving server holding the lease, "
          "and to its controllers acting):")
    for how, label in (("SIGTERM", "clean stop (SIGTERM, leases released)"),
                       ("SIGKILL", "crash (SIGKILL of server and etcd, leases expire)")):
        print(f"  {label}:")
        for key, text in (("kube-controller-manager", "kube-controller-manager lease"),
                          ("kube-scheduler", "kube-scheduler lease"),
                          ("pods", "ReplicaSet's pods created")):
            print(f"    {text:32s} {figures(results[how][key])}")


async def leaders_known(group: list[Server]) -> dict[str, Server] | None:
    """Which server holds each lease, once every lease is held by a known server."""
    alive_ones = [s for s in group if s.proc.poll() is None]
    held = await holders(alive_ones[0])
    found = {}
    for name, holder in held.items():
        owner = next((s for s in alive_ones if holder and holder in s.identities()), None)
        if owner is None:
            return None
        found[name] = owner
    return found


async def one_round(group: list[Server], how: str, replicas: int) -> dict[str, float]:
    owners = await until(lambda: leaders_known(group), 60, "both leases held")
    victim = owners["kube-controller-manager"]
    survivors = [s for s in group if s is not victim]
    witness = survivors[0]
    lost = [name for name, owner in owners.items() if owner is victim]
    gone = victim.identities()
    await victim.drop_client()
    killed = time.monotonic()
    if how == "SIGTERM":
        victim.proc.send_signal(signal.SIGTERM)
    else:
        victim.kill_with_etcd()

    async def scale():
        await call(witness.client.patch(REPLICASETS, "ha-bench",
                                        {"spec": {"replicas": replicas}}, "default"))
        return True

    async def pods_created():
        listed = await call(witness.client.list(PODS, "default", label_selector="app=ha-bench"))
        return len(listed["items"]) >= replicas

    async def lease_moved(name: str):
        lease = await call(witness.client.get(LEASES, name, "kube-system"))
        holder = (lease.get("spec") or {}).get("holderIdentity") or ""
        return holder and holder not in gone

    got: dict[str, float] = {}

    async def timed(key: str, condition) -> None:
        await until(condition, 120, key)
        got[key] = time.monotonic() - killed

    await until(scale, 60, "the ReplicaSet scaled")
    await asyncio.gather(*(timed(name, lambda n=name: lease_moved(n)) for name in lost),
                         timed("pods", pods_created))
    await asyncio.to_thread(victim.proc.wait, 60)
    for pid in victim.etcd_pids:
        await asyncio.to_thread(wait_gone, pid, 30)
    await victim.start()  # back from its data, for the next round
    return {key: got[key] for key in (*ELECTED, "pods") if key in got}


# -- 2. memory and 3. snapshot --------------------------------------------------------------

async def fill(client: Client, start: int, stop: int) -> None:
    data = {"v": "x" * 1024}
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            await client.create(CONFIGMAPS, {"metadata": {"name": f"bench-{i}"}, "data": data},
                                "default")

    await asyncio.gather(*(one(i) for i in range(start, stop)))


async def memory(root: str, kind: str, objects: int, idle: float,
                 servers: list[Server]) -> Server:
    server = Server(root, f"mem-{kind}", *(["--cluster-init"] if kind == "etcd" else []))
    servers.append(server)
    await server.start()
    await asyncio.sleep(idle)
    k8py0, etcd0 = server.rss()
    started = time.monotonic()
    await fill(server.client, 0, objects)
    filled = time.monotonic() - started
    await asyncio.sleep(idle)
    k8py1, etcd1 = server.rss()
    label = "embedded etcd" if kind == "etcd" else "SQLite"
    print(f"  {label:14s} idle: k8py {k8py0:6.1f} MB + etcd {etcd0:6.1f} MB = "
          f"{k8py0 + etcd0:6.1f} MB;  after {objects} ConfigMaps ({filled:.1f}s): "
          f"k8py {k8py1:6.1f} MB + etcd {etcd1:6.1f} MB = {k8py1 + etcd1:6.1f} MB")
    return server


async def snapshot(server: Server, have: int, objects: int) -> None:
    started = time.monotonic()
    await fill(server.client, have, objects)
    print(f"  filled to {objects} ConfigMaps in {time.monotonic() - started:.1f}s")
    started = time.monotonic()
    saved = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "k8py", "etcd-snapshot", "save", "--data-dir", server.data_dir,
        "--name", "bench"], capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    if saved.returncode != 0:
        raise RuntimeError(f"etcd-snapshot save failed: {saved.stderr[-2000:]}")
    target = glob.glob(os.path.join(server.data_dir, "server", "db", "snapshots", "bench-*"))[0]
    print(f"  k8py etcd-snapshot save (running server): {took:6.2f}s  "
          f"({os.path.getsize(target) / 1e6:.1f} MB)")
    await server.drop_client()
    server.stop()
    started = time.monotonic()
    restored = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "k8py", "server", "--data-dir", server.data_dir,
        "--cluster-reset", "--cluster-reset-restore-path", target],
        capture_output=True, text=True, timeout=600)
    took = time.monotonic() - started
    if restored.returncode != 0:
        raise RuntimeError(f"--cluster-reset failed: {restored.stderr[-2000:]}")
    print(f"  k8py server --cluster-reset --cluster-reset-restore-path: {took:6.2f}s")
    took = await server.start()

    async def counted():
        listed = await call(server.client.list(CONFIGMAPS, "default"))
        return sum(1 for m in listed["items"] if m["metadata"]["name"].startswith("bench-"))
    count = await until(counted, 60, "the restored ConfigMaps")
    print(f"  restart from the restored member until the API serves: {took:6.2f}s  "
          f"({count} ConfigMaps back)")


async def main(args, servers: list[Server]) -> None:
    root = tempfile.mkdtemp(prefix="k8py-bench-ha-")
    try:
        if not args.no_failover:
            print(f"failover: three servers on an embedded etcd, {args.rounds} rounds each")
            group: list[Server] = []
            try:
                await failover(root, args.rounds, group)
            finally:
                servers.extend(group)
                await stop_all(group)
        if not args.no_memory or not args.no_snapshot:
            print("server memory (VmRSS; --disable-agent):")
            etcd_server = await memory(root, "etcd", args.objects, args.idle, servers)
            if not args.no_memory:
                sqlite_server = await memory(root, "sqlite", args.objects, args.idle, servers)
                await stop_all([sqlite_server])
            if not args.no_snapshot:
                print(f"snapshot and restore of the embedded etcd, {args.snapshot_objects} "
                      "objects:")
                await snapshot(etcd_server, args.objects, args.snapshot_objects)
    finally:
        await stop_all(servers)
        shutil.rmtree(root, ignore_errors=True)


async def stop_all(servers: list[Server]) -> None:
    for server in servers:
        await server.drop_client()
    await asyncio.gather(*(asyncio.to_thread(server.stop) for server in servers))


def run(args) -> None:
    servers: list[Server] = []

    def terminated(signum, frame):
        raise KeyboardInterrupt  # the same unwinding as Ctrl-C: every server stopped

    signal.signal(signal.SIGTERM, terminated)
    try:
        asyncio.run(main(args, servers))
    finally:  # after an interrupt that cut main's own cleanup short
        for server in servers:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="failovers of each kind")
    parser.add_argument("--objects", type=int, default=1000,
                        help="ConfigMaps created before the second memory figure")
    parser.add_argument("--snapshot-objects", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=15.0,
                        help="seconds idle before each memory figure")
    parser.add_argument("--no-failover", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-snapshot", action="store_true")
    if not os.path.exists("/usr/bin/etcd"):
        sys.exit("bench/ha.py needs etcd (/usr/bin/etcd: apt install etcd-server)")
    sys.stdout.reconfigure(line_buffering=True)  # figures as they come, also through a pipe
    try:
        run(parser.parse_args())
    except KeyboardInterrupt:
        sys.exit("interrupted: every server and etcd started here is stopped")
