"""SQLite snapshots against a live store: a snapshot taken while writes go on is one
consistent revision; restoring it brings every key back with its revisions, the store
continues above them (old revisions compacted), and a store in use is never replaced."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

from k8py.server.store import open_backend
from k8py.server.store.backend import Compacted, CorruptStore, StoreLocked
from k8py.server.store.snapshot import NoSnapshots, snapshotter


async def open_store(tmp_path, **options):
    query = "&".join(f"{k}={v}" for k, v in options.items())
    store = open_backend(f"sqlite://{tmp_path}/db/state.db" + (f"?{query}" if query else ""),
                         str(tmp_path))
    await store.start()
    return store


async def everything(store, revision=0):
    result = await store.range("/registry/", revision=revision)
    return {kv.key: (kv.value, kv.create_revision, kv.mod_revision) for kv in result.items}


async def test_snapshot_during_writes_restores_every_key_with_its_revisions(tmp_path):
    store = await open_store(tmp_path, retain=1_000_000)
    snapshots = snapshotter(f"sqlite://{tmp_path}/db/state.db", str(tmp_path))
    for i in range(300):
        await store.create(f"/registry/pods/ns/p{i}", b"v0")
    stop = asyncio.Event()

    async def writer(n):
        i = 0
        while not stop.is_set():
            key = f"/registry/pods/ns/p{(n * 7 + i) % 300}"
            current = await store.get(key)
            if current is None:
                await store.create(key, b"again")
            elif i % 5 == 0:
                await store.delete(key, mod_revision=0)
            else:
                await store.update(key, b"v%d" % i, mod_revision=current.mod_revision)
            i += 1

    writers = [asyncio.create_task(writer(n)) for n in range(4)]
    await asyncio.sleep(0)
    while store.revision < 600:  # writes are well under way
        await asyncio.sleep(0.01)
    path = str(tmp_path / "snap")
    revision = await snapshots.save(path)
    stop.set()
    await asyncio.gather(*writers)
    assert 600 <= revision < store.revision  # taken mid-stream, writes went on after it
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".part") or "-wal" in n]
    at_snapshot = await everything(store, revision)  # the live store's view at that revision
    last = store.revision
    with pytest.raises(StoreLocked):
        await snapshots.restore(path)  # never under an open store
    await store.close()

    restored = await snapshots.restore(path)
    assert restored.snapshot_revision == revision
    assert restored.revision > last
    assert restored.keys == len(at_snapshot)
    assert restored.replaced and os.path.exists(restored.replaced)
    db = tmp_path / "db" / "state.db"
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600

    store = await open_store(tmp_path)
    try:
        assert await everything(store) == at_snapshot  # same values and resourceVersions
        assert store.revision == restored.revision
        created = await store.create("/registry/pods/ns/new", b"n")
        assert created.mod_revision == restored.revision + 1
        # a client holding a revision from before the restore relists (410), never waits
        with pytest.raises(Compacted):
            await store.range("/registry/", revision=last)
        with pytest.raises(Compacted):
            store.watch("/registry/", start_revision=last)
        watch = store.watch("/registry/", start_revision=created.mod_revision)
        kv = await store.get("/registry/pods/ns/new")
        await store.update("/registry/pods/ns/new", b"m", mod_revision=kv.mod_revision)
        events = await asyncio.wait_for(anext(aiter(watch)), 5)
        assert [e.revision for e in events][0] == created.mod_revision
        watch.close()
    finally:
        await store.close()


async def test_restore_refuses_what_is_not_a_snapshot(tmp_path):
    snapshots = snapshotter(f"sqlite://{tmp_path}/db/state.db", str(tmp_path))
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"not sqlite at all")
    with pytest.raises(CorruptStore):
        await snapshots.restore(str(bogus))
    with pytest.raises(NoSnapshots):
        await snapshots.restore(str(tmp_path / "missing"))
    with pytest.raises(NoSnapshots):
        await snapshots.save(str(tmp_path / "snap"))  # no database yet
    assert not (tmp_path / "db" / "state.db").exists()


async def test_memory_has_no_snapshots(tmp_path):
    with pytest.raises(NoSnapshots):
        snapshotter("memory://", str(tmp_path))
