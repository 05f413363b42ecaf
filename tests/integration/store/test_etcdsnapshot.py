"""etcd snapshots with real etcd: `save` through Maintenance.Snapshot from a live 3-member TLS
cluster (the file etcdctl accepts, mode 0600), `k8py etcd-snapshot save` against it, restore
into an embedded member's data dir (old dir moved aside, refused while etcd runs), and
`--cluster-reset` of a member whose cluster lost its quorum."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import yaml

from k8py.server.store import open_backend
from k8py.server.store.backend import CorruptStore, StoreLocked
from k8py.server.store.etcdsnapshot import (
    Member,
    check_hash,
    restore_member,
    snapshot_status,
)
from k8py.server.store.snapshot import snapshotter
from tests.integration.store.etcdcluster import ETCD, EtcdCluster

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd (Debian's etcd-server) is not "
                                "installed")


async def fill(cluster, n: int) -> dict[str, bytes]:
    store = open_backend(cluster.endpoints, "", **cluster.tls())
    await store.start()
    try:
        written = {}
        for i in range(n):
            key = f"/registry/configmaps/ns/c{i}"
            await store.create(key, b"v%d" % i)
            written[key] = b"v%d" % i
        current = await store.get("/registry/configmaps/ns/c0")
        await store.update(current.key, b"changed", mod_revision=current.mod_revision)
        written[current.key] = b"changed"
        return written
    finally:
        await store.close()


def single(root, name="solo") -> tuple[EtcdCluster, Member]:
    """A one-member cluster (not started) whose data dir is an embedded member's."""
    cluster = EtcdCluster(str(root), members=1)
    cluster.names = [name]
    return cluster, Member(os.path.join(str(root), name), name,
                           f"http://127.0.0.1:{cluster.peer_ports[0]}")


async def test_save_restore_into_an_embedded_member(etcd_cluster, tmp_path):
    etcd_cluster.etcdctl("del", "--prefix", "")
    written = await fill(etcd_cluster, 50)
    snapshots = snapshotter(etcd_cluster.endpoints, str(tmp_path), **etcd_cluster.tls())
    path = str(tmp_path / "snap")
    revision = await snapshots.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []  # no partial left
    check_hash(path)
    status = snapshot_status(path)  # etcdctl reads it
    assert status["revision"] >= revision > 0

    target, member = single(tmp_path / "target")
    os.makedirs(member.data_dir)
    with open(os.path.join(member.data_dir, "config"), "w") as f:
        f.write("name: solo\n")
    restored = restore_member(member, path)
    assert restored.snapshot_revision == status["revision"]
    assert restored.replaced and os.path.basename(restored.replaced).startswith("etcd-old-")
    with open(os.path.join(member.data_dir, "config")) as f:  # the server's files carried
        assert f.read() == "name: solo\n"
    target.start_member(0, state="new")
    try:
        target.wait_healthy()
        store = open_backend(target.endpoints, "", **target.tls())
        await store.start()
        try:
            found = await store.range("/registry/")
            assert {kv.key: kv.value for kv in found.items} == written
            assert store.revision >= status["revision"]  # etcd 3.4: continues from it
        finally:
            await store.close()
        with pytest.raises(StoreLocked):  # etcd runs on it
            restore_member(member, path)
    finally:
        target.stop()


async def test_a_damaged_snapshot_is_refused(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\0" * (4096 + 32))
    with pytest.raises(CorruptStore):
        check_hash(str(bad))
    _, member = single(tmp_path / "target")
    with pytest.raises(CorruptStore):
        restore_member(member, str(bad))
    assert not os.path.exists(member.data_dir)


def test_cli_saves_from_etcd_and_resets_a_member_without_quorum(tmp_path):
    pair = EtcdCluster(str(tmp_path / "pair"), members=2)
    pair.start()
    try:
        pair.etcdctl("put", "/registry/kept", "yes")
        snapshots = tmp_path / "snaps"
        tls = pair.tls()
        saved = subprocess.run(
            [sys.executable, "-m", "k8py", "etcd-snapshot", "save", "--datastore-endpoint",
             pair.endpoints, "--datastore-cafile", tls["cafile"], "--datastore-certfile",
             tls["certfile"], "--datastore-keyfile", tls["keyfile"], "--dir", str(snapshots),
             "--node-name", "n1"], capture_output=True, text=True, timeout=60)
        assert saved.returncode == 0, saved.stderr
        (taken,) = os.listdir(snapshots)
        assert taken.startswith("on-demand-n1-")
        check_hash(str(snapshots / taken))
    finally:
        pair.stop()
    # m0 as an embedded member of a data dir; alone it has no quorum (1 of 2)
    data_dir = tmp_path / "data"
    etcd_dir = data_dir / "server" / "db" / "etcd"
    os.makedirs(etcd_dir.parent)
    os.rename(os.path.join(pair.root, "m0"), etcd_dir)
    peer = f"http://127.0.0.1:{pair.peer_ports[0]}"
    client = f"https://127.0.0.1:{pair.client_ports[0]}"
    with open(etcd_dir / "config", "w") as f:
        yaml.safe_dump({"name": "m0", "initial-advertise-peer-urls": peer,
                        "advertise-client-urls": client}, f)
    reset = subprocess.run([sys.executable, "-m", "k8py", "server", "-d", str(data_dir),
                            "--cluster-reset"], capture_output=True, text=True, timeout=120)
    assert reset.returncode == 0, reset.stderr
    assert "restart without --cluster-reset" in reset.stderr
    assert not [p for p in os.listdir(etcd_dir.parent) if p.startswith(".etcd-reset")]
    os.rename(etcd_dir, os.path.join(pair.root, "m0"))
    pair.start_member(0)
    try:
        pair.wait_healthy()
        running = f"https://127.0.0.1:{pair.client_ports[0]}"
        assert pair.etcdctl("get", "/registry/kept", "--print-value-only",
                            endpoints=running).strip() == "yes"
        members = pair.etcdctl("member", "list", endpoints=running).strip().splitlines()
        assert len(members) == 1 and ", m0, " in members[0]
    finally:
        pair.stop()
