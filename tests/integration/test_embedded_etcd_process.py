"""The embedded etcd with real `k8py server` processes and Debian's etcd, on loopback with
distinct ports: a first server with --cluster-init, a second joining it (a learner, then a
voting member), both API servers serving the same objects, a restart of the second member from
its data, `k8py etcd member`, and the member removed when its server's Node is deleted."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import threading

import pytest

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from tests.conftest import stop_process, wait_for
from tests.integration.test_server_process import free_port, wait_for_line

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/etcd"), reason="needs etcd")

CONFIGMAPS = builtin("v1", "configmaps")
NODES = builtin("v1", "nodes")


class Server:
    def __init__(self, data_dir, name: str, *extra: str):
        self.data_dir, self.name = data_dir, name
        self.api_port, self.client_port, self.peer_port = free_port(), free_port(), free_port()
        self.kubeconfig = str(data_dir / "kubeconfig.yaml")
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> list[str]:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "k8py", "server", "--data-dir", str(self.data_dir),
             "--node-name", self.name, "--node-ip", "127.0.0.1",
             "--bind-address", "127.0.0.1", "--https-listen-port", str(self.api_port),
             "--etcd-client-port", str(self.client_port),
             "--etcd-peer-port", str(self.peer_port),
             "--write-kubeconfig", self.kubeconfig, "--disable-agent", "--disable-scheduler",
             *self.extra], stderr=subprocess.PIPE, text=True)
        seen = wait_for_line(self.proc, "wrote admin kubeconfig", timeout=120)
        lines: list[str] = []  # keep reading, so the server never blocks on a full pipe
        threading.Thread(target=lambda: lines.extend(self.proc.stderr), daemon=True).start()
        return seen

    def stop(self) -> None:
        stop_process(self.proc)

    def call(self, action):
        async def run():
            client = Client(HttpTransport.from_kubeconfig(self.kubeconfig))
            try:
                return await action(client)
            finally:
                await client.close()
        return asyncio.run(run())


def members(server: Server) -> list[list[str]]:
    listed = subprocess.run([sys.executable, "-m", "k8py", "etcd", "member", "list", "-d",
                             str(server.data_dir)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    return [line.split() for line in listed.stdout.splitlines()[1:]]


def etcd_pid(server: Server) -> int:
    with open(server.data_dir / "server" / "db" / "etcd.pid") as f:
        return int(f.read())


def test_cluster_init_join_restart_and_remove(tmp_path):
    first = Server(tmp_path / "s1", "s1", "--cluster-init")
    second = None
    pids = []
    try:
        first.start()
        pids.append(etcd_pid(first))
        etcd_tls = tmp_path / "s1" / "server" / "tls" / "etcd"
        for name in ("server-ca.key", "peer-ca.key", "client.key", "server-client.key"):
            assert stat.S_IMODE(os.stat(etcd_tls / name).st_mode) == 0o600
        assert (tmp_path / "s1" / "server" / "db" / "etcd" / "member").is_dir()
        with open(tmp_path / "s1" / "server" / "token") as f:
            token = f.read().strip()

        second = Server(tmp_path / "s2", "s2", "--server",
                        f"https://127.0.0.1:{first.api_port}", "--token", token)
        said = "".join(second.start())
        assert "added learner" in said and "promoted to a voting member" in said
        pids.append(etcd_pid(second))
        listed = members(first)
        assert sorted(row[2] for row in listed) == ["s1", "s2"]
        assert all(row[1] == "started" and row[-1] == "false" for row in listed), listed
        # the same CA: the second server's serving certificate is trusted by the first's
        # kubeconfig, and the objects are the same
        first.call(lambda c: c.create(CONFIGMAPS, {"metadata": {"name": "from-one"},
                                                   "data": {"a": "1"}}, "default"))
        got = second.call(lambda c: c.get(CONFIGMAPS, "from-one", "default"))
        assert got["data"] == {"a": "1"}
        second.call(lambda c: c.create(CONFIGMAPS, {"metadata": {"name": "from-two"}},
                                       "default"))
        assert first.call(lambda c: c.get(CONFIGMAPS, "from-two", "default"))

        # restart of the second member: from its data, nothing added again
        second.stop()
        assert second.proc.returncode == 0
        said = "".join(second.start())
        assert "restarting member s2" in said and "added learner" not in said
        pids.append(etcd_pid(second))
        assert len(members(first)) == 2
        assert second.call(lambda c: c.get(CONFIGMAPS, "from-one", "default"))

        unknown = subprocess.run([sys.executable, "-m", "k8py", "etcd", "member", "remove",
                                  "-d", str(first.data_dir), "nope"],
                                 capture_output=True, text=True, timeout=60)
        assert unknown.returncode == 1 and "no etcd member named 'nope'" in unknown.stderr

        # deleting the second server's Node removes its member (the leader's controller)
        first.call(lambda c: c.create(NODES, {"metadata": {"name": "s2"}}))

        def finalized():
            node = first.call(lambda c: c.get(NODES, "s2"))
            return "etcd.k8py.io/member" in (node["metadata"].get("finalizers") or [])
        wait_for(finalized, 30, "the member finalizer on node s2")
        first.call(lambda c: c.delete(NODES, "s2"))

        def node_gone():
            async def get(c):
                try:
                    await c.get(NODES, "s2")
                except errors.NotFound:
                    return True
                return False
            return first.call(get)
        wait_for(node_gone, 60, "node s2 deleted")
        assert [row[2] for row in members(first)] == ["s1"]
        assert first.call(lambda c: c.get(CONFIGMAPS, "from-two", "default"))
    finally:
        if second is not None:
            second.stop()
        first.stop()
    for pid in pids:  # every etcd ended with its server
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 30, f"etcd {pid} gone")


@pytest.mark.parametrize("flags, message", [
    (("--cluster-init", "--datastore-endpoint", "sqlite://"), "--datastore-endpoint"),
    (("--cluster-init", "--server", "https://127.0.0.1:1", "--token", "K10x::server:y"),
     "give one of them"),
    (("--server", "https://127.0.0.1:1"), "--server needs --token"),
    (("--server", "http://127.0.0.1:1", "--token", "K10x::server:y"), "not an https:// URL"),
])
def test_embedded_etcd_flags_are_checked(tmp_path, flags, message):
    done = subprocess.run([sys.executable, "-m", "k8py", "server", "--data-dir", str(tmp_path),
                           *flags], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_sqlite_migrates_then_snapshot_and_restore(tmp_path):
    """A SQLite server restarted with --cluster-init moves every object into its new etcd,
    in resourceVersion order; `k8py etcd-snapshot save` snapshots the embedded etcd beside the
    running server, and `--cluster-reset --cluster-reset-restore-path` brings that state
    back."""
    data_dir = tmp_path / "s1"
    server = Server(data_dir, "s1")
    pids = []
    try:
        server.start()
        for name in ("first", "second", "third"):
            server.call(lambda c, n=name: c.create(CONFIGMAPS, {"metadata": {"name": n},
                                                                "data": {"v": "0"}}, "default"))
        # updated after the others: the newest resourceVersion
        first = server.call(lambda c: c.get(CONFIGMAPS, "first", "default"))
        first["data"]["v"] = "1"
        server.call(lambda c: c.update(CONFIGMAPS, first))
        server.call(lambda c: c.delete(CONFIGMAPS, "third", "default"))
        server.stop()

        server = Server(data_dir, "s1", "--cluster-init")
        said = "".join(server.start())
        assert "Migrating the SQLite datastore" in said
        pids.append(etcd_pid(server))
        assert (data_dir / "server" / "db" / "state.db.migrated").exists()
        listed = [m for m in server.call(lambda c: c.list(CONFIGMAPS, "default"))["items"]
                  if m["metadata"]["name"] in ("first", "second", "third")]
        values = {m["metadata"]["name"]: m["data"]["v"] for m in listed}
        assert values == {"first": "1", "second": "0"}
        versions = {m["metadata"]["name"]: int(m["metadata"]["resourceVersion"])
                    for m in listed}
        assert versions["second"] < versions["first"]  # the order SQLite gave them

        saved = subprocess.run([sys.executable, "-m", "k8py", "etcd-snapshot", "save",
                                "--data-dir", str(data_dir), "--name", "before"],
                               capture_output=True, text=True, timeout=120)
        assert saved.returncode == 0, saved.stderr
        snapshots = list((data_dir / "server" / "db" / "snapshots").glob("before-*"))
        assert len(snapshots) == 1
        assert stat.S_IMODE(os.stat(snapshots[0]).st_mode) == 0o600
        server.call(lambda c: c.create(CONFIGMAPS, {"metadata": {"name": "after"}},
                                       "default"))
        refused = subprocess.run(
            [sys.executable, "-m", "k8py", "server", "--data-dir", str(data_dir),
             "--cluster-reset", "--cluster-reset-restore-path", str(snapshots[0])],
            capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0  # its etcd is running
        server.stop()

        restored = subprocess.run(
            [sys.executable, "-m", "k8py", "server", "--data-dir", str(data_dir),
             "--cluster-reset", "--cluster-reset-restore-path", str(snapshots[0])],
            capture_output=True, text=True, timeout=120)
        assert restored.returncode == 0, restored.stderr
        assert "restart without --cluster-reset" in restored.stderr
        server = Server(data_dir, "s1", "--cluster-init")
        server.start()
        pids.append(etcd_pid(server))
        kept = {m["metadata"]["name"]: m["metadata"]["resourceVersion"] for m in
                server.call(lambda c: c.list(CONFIGMAPS, "default"))["items"]}
        assert {"first", "second"} <= set(kept) and "after" not in kept
        assert int(kept["second"]) < int(kept["first"])

        # the datastore wiped (the snapshot kept elsewhere): the member the flags describe
        # is restored from the file, and the next start runs it with every object back, at
        # the resourceVersions it had
        server.stop()
        kept_file = tmp_path / "kept.db"
        shutil.copy(snapshots[0], kept_file)
        shutil.rmtree(data_dir / "server" / "db")
        restored = subprocess.run(
            [sys.executable, "-m", "k8py", "server", "--data-dir", str(data_dir),
             "--node-name", "s1", "--node-ip", "127.0.0.1",
             "--etcd-peer-port", str(server.peer_port),
             "--cluster-reset", "--cluster-reset-restore-path", str(kept_file)],
            capture_output=True, text=True, timeout=120)
        assert restored.returncode == 0, restored.stderr
        assert stat.S_IMODE(os.stat(data_dir / "server" / "db" / "etcd").st_mode) == 0o700
        server.start()
        pids.append(etcd_pid(server))
        back = {m["metadata"]["name"]: m["metadata"]["resourceVersion"] for m in
                server.call(lambda c: c.list(CONFIGMAPS, "default"))["items"]}
        assert back == kept
    finally:
        server.stop()
    for pid in pids:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z", 30, f"etcd {pid} gone")


def joiner(tmp_path, name: str, first: Server) -> Server:
    """A server that joins `first` with its token."""
    with open(first.data_dir / "server" / "token") as f:
        token = f.read().strip()
    return Server(tmp_path / name, name, "--server", f"https://127.0.0.1:{first.api_port}",
                  "--token", token)


def assert_three_voters(server: Server) -> None:
    listed = members(server)
    assert sorted(row[2] for row in listed) == ["s1", "s2", "s3"]
    assert all(row[1] == "started" and row[-1] == "false" for row in listed), listed


def test_servers_joining_one_after_the_other(tmp_path):
    """A third server joining right after the second: etcd refuses the MemberAdd as an
    "unhealthy cluster" until its leader has been connected to the new voter for 5 s; the
    join waits that out instead of failing."""
    servers = [Server(tmp_path / "s1", "s1", "--cluster-init")]
    try:
        servers[0].start()
        for name in ("s2", "s3"):
            servers.append(joiner(tmp_path, name, servers[0]))
            said = "".join(servers[-1].start())
            assert "promoted to a voting member" in said
        assert_three_voters(servers[0])
    finally:
        for server in reversed(servers):
            server.stop()


def test_servers_joining_at_the_same_time(tmp_path):
    """Two servers started together (the others of a restored cluster, say): etcd 3.4 takes
    one learner at a time and refuses the second MemberAdd ("too many learner members")
    until the first is promoted; that join waits its turn instead of failing."""
    servers = [Server(tmp_path / "s1", "s1", "--cluster-init")]
    try:
        servers[0].start()
        joining = [joiner(tmp_path, name, servers[0]) for name in ("s2", "s3")]
        servers += joining
        said: dict[str, str] = {}
        threads = [threading.Thread(target=lambda s=s: said.update({s.name: "".join(s.start())}))
                   for s in joining]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert all("promoted to a voting member" in said.get(s.name, "") for s in joining), said
        assert_three_voters(servers[0])
    finally:
        for server in reversed(servers):
            server.stop()
