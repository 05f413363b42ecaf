"""SQLite -> etcd migration against a real etcd: every live object arrives with its value, the
copies' mod revisions in the order of the SQLite resourceVersions; deleted objects stay gone;
an interrupted migration resumes without copying anything twice; the file is renamed aside."""

from __future__ import annotations

import os

import pytest

from k8py.server.store import open_backend
from k8py.server.store.migrate import MARKER, migrate, migrate_file
from k8py.server.store.sqlite import SQLiteBackend
from tests.integration.store.etcdcluster import ETCD

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd (Debian's etcd-server) is not "
                                "installed")


async def sqlite_with_history(path: str) -> SQLiteBackend:
    store = SQLiteBackend(path)
    await store.start()
    kinds = ["pods", "configmaps", "secrets", "services"]
    for i in range(120):
        await store.create(f"/registry/{kinds[i % 4]}/ns/o{i}", b"v0-%d" % i)
    for round_ in range(3):  # some updated several times, interleaved with the others
        for i in range(0, 120, 7):
            key = f"/registry/{kinds[i % 4]}/ns/o{i}"
            current = await store.get(key)
            await store.update(key, b"v%d-%d" % (round_ + 1, i), mod_revision=current.mod_revision)
    for i in range(3, 120, 11):
        await store.delete(f"/registry/{kinds[i % 4]}/ns/o{i}")
    await store.create("/registry/events/ns/e1", b"event", ttl=3600)
    return store


async def live(store, prefix="/registry/") -> dict:
    found = await store.range(prefix)
    return {kv.key: kv for kv in found.items}


async def test_migration_keeps_values_and_order_and_resumes(etcd_cluster, tmp_path):
    etcd_cluster.etcdctl("del", "--prefix", "")
    path = str(tmp_path / "db" / "state.db")
    sqlite_store = await sqlite_with_history(path)
    etcd_store = open_backend(etcd_cluster.endpoints, "", **etcd_cluster.tls())
    await etcd_store.start()
    try:
        before = await live(sqlite_store)
        assert len(before) == 120 - 11 + 1
        # interrupted after 40 keys, then resumed
        first = await migrate(sqlite_store, etcd_store, stop_after=40)
        assert first.copied == 40
        assert len(await live(etcd_store)) == 40
        await sqlite_store.close()
        result = await migrate_file(path, etcd_store)
        assert (result.copied, result.skipped, result.expired) == (len(before) - 40, 40, 0)

        after = await live(etcd_store)
        assert {k: kv.value for k, kv in after.items()} == {
            k: kv.value for k, kv in before.items()}
        by_sqlite = sorted(before, key=lambda k: before[k].mod_revision)
        by_etcd = sorted(after, key=lambda k: after[k].mod_revision)
        assert by_etcd == by_sqlite
        revisions = [after[k].mod_revision for k in by_etcd]
        assert len(set(revisions)) == len(revisions)  # one per key: no ties, no duplicates
        # the TTL key has a lease
        lease = etcd_cluster.etcdctl("get", "/registry/events/ns/e1", "-w", "json")
        assert '"lease":' in lease
        assert etcd_cluster.etcdctl("get", MARKER.decode()).strip() == ""  # removed at the end
        assert not os.path.exists(path)
        assert os.path.exists(path + ".migrated")
        assert await migrate_file(path, etcd_store) is None  # nothing left to migrate
    finally:
        await etcd_store.close()
        await sqlite_store.close()
