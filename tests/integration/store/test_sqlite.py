"""What only the SQLite backend promises: durability across restarts and SIGKILL, owner-only
files, bounded size, and clear errors for bad files and bad disks."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from k8py.server.store.backend import CorruptStore, StoreLocked, Unavailable
from k8py.server.store.sqlite import SQLiteBackend
from tests.conftest import small_tmpfs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


async def opened(path, **options) -> SQLiteBackend:
    store = SQLiteBackend(str(path), **options)
    await store.start()
    return store


async def test_data_survives_restart_and_revision_keeps_growing(tmp_path):
    path = tmp_path / "state.db"
    store = await opened(path)
    kv = await store.create("/a", b"1")
    await store.update("/a", b"2", mod_revision=kv.mod_revision)
    last = await store.create("/b", b"b")
    await store.delete("/b", mod_revision=last.mod_revision)
    await store.compact(store.revision)  # removes the tombstone, the newest row
    revision = store.revision
    await store.close()

    store = await opened(path)
    try:
        assert store.revision == revision
        assert store.compact_revision == revision
        assert (await store.get("/a")).value == b"2"
        assert await store.get("/b") is None
        kv = await store.create("/c", b"c")
        assert kv.mod_revision == revision + 1
    finally:
        await store.close()


async def test_files_are_owner_only(tmp_path):
    path = tmp_path / "db" / "state.db"
    store = await opened(path)
    await store.create("/secret", b"s3cr3t")
    try:
        for name in ("state.db", "state.db-wal", "state.db.lock"):
            mode = stat.S_IMODE(os.stat(tmp_path / "db" / name).st_mode)
            assert mode == 0o600, f"{name} has mode {oct(mode)}"
        assert stat.S_IMODE(os.stat(tmp_path / "db").st_mode) == 0o700
    finally:
        await store.close()


async def test_second_process_on_same_file_is_refused(tmp_path):
    store = await opened(tmp_path / "state.db")
    try:
        with pytest.raises(StoreLocked, match="in use"):
            await opened(tmp_path / "state.db")
    finally:
        await store.close()


async def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite at all\n" * 100)
    with pytest.raises(CorruptStore, match="not a SQLite database"):
        await opened(path)
    assert path.read_bytes().startswith(b"this is not sqlite"), "the file was touched"


async def test_foreign_sqlite_database_is_a_clear_error(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(CorruptStore, match="not a k8py store"):
        await opened(path)


async def test_damaged_database_is_a_clear_error(tmp_path):
    path = tmp_path / "state.db"
    store = await opened(path)
    for i in range(300):
        await store.create(f"/k/{i:04}", os.urandom(500))
    await store.close()
    with open(path, "r+b") as f:  # scribble over pages in the middle of the file
        f.seek(3 * 4096)
        f.write(os.urandom(4 * 4096))
    with pytest.raises(CorruptStore):
        await opened(path)


async def test_history_and_file_stay_bounded_under_churn(tmp_path):
    store = await opened(tmp_path / "state.db", retain=200, compact_interval=0.05)
    value = b"v" * 1024
    revisions = {}
    for i in range(100):
        revisions[i] = (await store.create(f"/churn/{i}", value)).mod_revision
    for round_ in range(60):
        kvs = await asyncio.gather(
            *(store.update(f"/churn/{i}", value, mod_revision=revisions[i]) for i in range(100))
        )
        revisions = {i: kv.mod_revision for i, kv in enumerate(kvs)}
    from tests.conftest import eventually

    await eventually(lambda: store.compact_revision >= store.revision - 200, what="compaction")
    await store.compact(store.revision - 200)
    rows = await store._query("SELECT COUNT(*) FROM kv", ())
    assert rows[0][0] <= 100 + 200, "history beyond the retained window was kept"
    live_bytes = 100 * 1024

    async def small():  # the background loop gives freed pages back, a slice per tick
        stats = await store.stats()
        return stats.db_bytes < 8 * live_bytes and stats.wal_bytes <= 8 * 1024 * 1024

    await eventually(small, what="the file shrinking back to a few times its live data")
    await store.close()


def _storm(path, writers=16):
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.store.storm_writer", str(path), str(writers)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("round_", range(3))
async def test_sigkill_in_a_write_storm_loses_no_acknowledged_write(tmp_path, round_):
    path = tmp_path / "state.db"
    proc = _storm(path)
    acked = {}
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while len(acked) < 2000 + round_ * 1500 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            _, key, revision, stamp = line.split()
            acked[int(revision)] = (key, stamp)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert len(acked) >= 2000, "the storm did not get going"

    store = await opened(path)
    try:
        assert store.revision >= max(acked)
        # Every acknowledged write is there: the newest acknowledged version of each key is the
        # stored one or an older one than what is stored (a later write may have landed
        # unacknowledged); nothing acknowledged is missing from the history.
        history = await store._read_history("/storm/", 1, store.revision, 10**7)
        stored = {e.revision: e for e in history}
        for revision, (key, stamp) in acked.items():
            assert revision in stored, f"acknowledged write {revision} on {key} is gone"
            assert stored[revision].kv.key == key
            assert stored[revision].kv.value.startswith(stamp.encode())
        # Revisions are dense and the store is consistent and writable.
        assert sorted(stored) == list(range(1, store.revision + 1))
        (check,) = (await store._query("PRAGMA integrity_check", ()))[0]
        assert check == "ok"
        kv = await store.create("/after/restart", b"ok")
        assert kv.mod_revision == store.revision
    finally:
        await store.close()


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB tmpfs, to fill up and to turn read-only."""
    with small_tmpfs(tmp_path / "disk", "2m") as mount:
        yield mount


async def test_full_disk_fails_the_write_clearly_and_keeps_the_rest(small_disk):
    store = await opened(small_disk / "state.db", retain=10**9)
    acked = {}
    error = None
    for i in range(10_000):
        try:
            kv = await store.create(f"/fill/{i:05}", os.urandom(1024))
        except Unavailable as exc:
            error = exc
            break
        acked[kv.key] = kv
    assert error is not None, "the disk never filled"
    assert "full" in str(error)
    # Reads still work and everything acknowledged is there.
    assert len((await store.range("/fill/")).items) == len(acked)
    for key in list(acked)[:: max(1, len(acked) // 50)]:
        assert await store.get(key) == acked[key]
    # Make room: the store takes writes again without a restart.
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    kv = await store.create("/fill/after", b"room again")
    assert kv.mod_revision == store.revision
    await store.close()

    store = await opened(small_disk / "state.db")
    try:
        assert (await store.count("/fill/"))[1] == len(acked) + 1
        (check,) = (await store._query("PRAGMA integrity_check", ()))[0]
        assert check == "ok"
    finally:
        await store.close()


async def test_read_only_disk_is_a_clear_error_at_start(small_disk):
    store = await opened(small_disk / "state.db")
    kv = await store.create("/ro/a", b"before")
    await store.close()
    # A file system that went read-only (ext4's errors=remount-ro does this to a failing disk).
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(Unavailable, match="[Rr]ead-only"):
            await opened(small_disk / "state.db")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    store = await opened(small_disk / "state.db")
    try:
        assert await store.get("/ro/a") == kv
    finally:
        await store.close()
