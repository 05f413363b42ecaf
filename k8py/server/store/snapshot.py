"""Snapshots of a datastore: a consistent copy in one file, and its restore.

The contract (`Snapshotter`) is what `k8py etcd-snapshot` and `k8py server --cluster-reset`
need from a backend, whatever it is:

- `save(destination)` writes a copy of the whole store as of one revision, taken while the
  server keeps writing, to `destination` (created mode 0600: the store holds Secrets), and
  returns that revision. The file appears whole or not at all (written aside, then renamed).
- `restore(source)` replaces the store with a snapshot. The store must not be in use
  (`StoreLocked` otherwise). Every key comes back with its create and mod revisions (the
  objects' resourceVersions); the store's revision is then raised above anything the replaced
  store may have handed out and history is marked compacted up to it, as `etcdutl snapshot
  restore --bump-revision --mark-compacted` does: a client still holding a newer
  resourceVersion gets 410 Gone and relists instead of waiting for revisions that will
  never come again, and new writes never reuse a revision.

Backends register a factory by URL scheme in `SNAPSHOTTERS`, as `open_backend` does; etcd
(`http(s)://` endpoints, or the embedded member a data dir holds when no endpoint is given) is
in `etcdsnapshot.py`: save through the Maintenance.Snapshot RPC, restore into a new data dir.

SQLite (`SQLiteSnapshots`)
    `save` copies with SQLite's online backup API in a single step: one read transaction, so
    one consistent revision, and in WAL mode readers never block the server's writer (a
    checkpoint the server asks for meanwhile waits at most its busy timeout). It needs no
    lock and no API server, so it works the same from the CLI beside a running server and
    from the server's own schedule. The copy is switched to a rollback journal so the
    snapshot is one self-contained file, then checked (`quick_check`).
    `restore` takes the store's lock, checks the snapshot, compacts its history offline, sets
    the bumped revision, moves the replaced database aside (`state-old-<unix time>.db`,
    checkpointed first so it is one file) and renames the restored copy into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable
from typing import Protocol

from k8py.server.store.backend import CorruptStore, StoreError, Unavailable
from k8py.server.store.sqlite import (
    SCHEMA_VERSION,
    SQLITE_HEADER,
    _COMPACT_SUPERSEDED,
    _COMPACT_TOMBSTONES,
    _SET_META,
    take_lock,
)

# Revisions added on restore beyond the highest one the replaced store had written: room for
# revisions a lost or unreadable store handed out that we cannot see.
RESTORE_REVISION_MARGIN = 100_000


class NoSnapshots(StoreError):
    """The datastore keeps nothing that can be snapshotted (memory://) or is not there."""


@dataclasses.dataclass(frozen=True)
class Restored:
    snapshot_revision: int  # the revision the snapshot was taken at
    revision: int  # the store's revision after the restore (writes continue above it)
    keys: int
    replaced: str | None  # where the replaced database was moved, if there was one


class Snapshotter(Protocol):
    """What snapshots need from a backend (see the module docstring)."""

    async def save(self, destination: str) -> int: ...

    async def restore(self, source: str) -> Restored: ...


class SQLiteSnapshots:
    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    async def save(self, destination: str) -> int:
        import asyncio

        return await asyncio.to_thread(self.save_now, destination)

    async def restore(self, source: str) -> Restored:
        import asyncio

        return await asyncio.to_thread(self.restore_now, source)

    # --- save -------------------------------------------------------------------------------

    def save_now(self, destination: str) -> int:
        if not os.path.exists(self.path):
            raise NoSnapshots(f"no datastore at {self.path}: nothing to snapshot")
        destination = os.path.abspath(destination)
        partial = _partial_path(destination)
        try:
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            # read-only through the URI: a snapshot never writes to the live database
            source = sqlite3.connect(f"file:{urllib.parse.quote(self.path)}?mode=ro",
                                     uri=True)
            try:
                source.execute("PRAGMA busy_timeout = 5000")
                copy = sqlite3.connect(partial)
                try:
                    source.backup(copy)  # pages=-1: all in one step, one read transaction
                    copy.execute("PRAGMA journal_mode = DELETE")
                    revision, _ = _check_store(copy, destination)
                finally:
                    copy.close()
            finally:
                source.close()
            _fsync(partial)
            os.replace(partial, destination)
            _fsync(os.path.dirname(destination))
            return revision
        except sqlite3.Error as exc:
            raise Unavailable(f"snapshot of {self.path} failed: {exc}") from exc
        except OSError as exc:
            raise Unavailable(f"snapshot to {destination} failed: {exc.strerror}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)

    # --- restore ----------------------------------------------------------------------------

    def restore_now(self, source: str) -> Restored:
        source = os.path.abspath(source)
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        lock = take_lock(self.path)  # StoreLocked while a server has the database open
        restored = _partial_path(self.path)
        try:
            _check_header(source)
            previous = _revision_of(self.path) if os.path.exists(self.path) else 0
            fd = os.open(restored, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.close(fd)
            try:
                with open(source, "rb") as src, open(restored, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            except OSError as exc:
                raise Unavailable(f"cannot copy {source}: {exc.strerror}") from exc
            db = sqlite3.connect(restored)
            try:
                snapshot_revision, keys = _check_store(db, source)
                revision = max(snapshot_revision, previous) + RESTORE_REVISION_MARGIN
                # history below the new compact revision can never be read again: drop it
                with db:
                    db.execute(_COMPACT_SUPERSEDED, (0, snapshot_revision))
                    db.execute(_COMPACT_TOMBSTONES, (0, snapshot_revision))
                    db.execute(_SET_META, ("compact_revision", revision))
                db.execute("VACUUM")
            except sqlite3.Error as exc:
                raise CorruptStore(f"{source}: cannot use this snapshot: {exc}") from exc
            finally:
                db.close()
            _fsync(restored)
            replaced = set_aside(self.path) if os.path.exists(self.path) else None
            for suffix in ("-wal", "-shm"):  # the replaced database's, checkpointed above
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path + suffix)
            os.replace(restored, self.path)
            _fsync(directory)
            return Restored(snapshot_revision, revision, keys, replaced)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(restored)
            os.close(lock)


def _partial_path(path: str) -> str:
    """Where a file is written before it is renamed to `path` (hidden: `ls` skips it)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.part")


def set_aside(path: str) -> str:
    """Move a replaced SQLite database out of the way, as `state-old-<unix time>.db` beside
    it; its new path."""
    stem, ext = os.path.splitext(path)
    aside = f"{stem}-old-{int(time.time())}{ext}"
    os.replace(path, aside)
    return aside


def _check_header(path: str) -> None:
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        raise NoSnapshots(f"no snapshot at {path}") from None
    except OSError as exc:
        raise Unavailable(f"{path}: {exc.strerror}") from exc
    if header != SQLITE_HEADER:
        raise CorruptStore(f"{path} is not a k8py SQLite snapshot")


def _check_store(db: sqlite3.Connection, name: str) -> tuple[int, int]:
    """(revision, live keys) of a k8py store, after checking it is one and is intact."""
    try:
        (check,) = db.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise CorruptStore(f"{name} is damaged: {check}")
        tables = {row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "kv"} <= tables:
            raise CorruptStore(f"{name} is a SQLite database, but not a k8py store")
        meta = dict(db.execute("SELECT name, value FROM meta"))
        if str(meta.get("schema_version")) != SCHEMA_VERSION:
            raise CorruptStore(f"{name} has store schema {meta.get('schema_version')!r}, "
                               f"this k8py reads {SCHEMA_VERSION!r}")
        (top,) = db.execute("SELECT MAX(revision) FROM kv").fetchone()
        (keys,) = db.execute(
            "SELECT COUNT(*) FROM (SELECT MAX(revision), deleted FROM kv GROUP BY key "
            "HAVING deleted = 0)").fetchone()
    except sqlite3.DatabaseError as exc:
        raise CorruptStore(f"{name}: cannot use this database: {exc}") from exc
    return max(top or 0, int(meta.get("compact_revision") or 0)), keys


def _revision_of(path: str) -> int:
    """The revision of the database being replaced; opening and closing it (the last
    connection) also checkpoints its WAL into the file, so the file moved aside is whole."""
    try:
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            (top,) = db.execute("SELECT MAX(revision) FROM kv").fetchone()
            meta = dict(db.execute("SELECT name, value FROM meta"))
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return 0  # an unreadable store is replaced; the margin covers what it had
    return max(top or 0, int(meta.get("compact_revision") or 0))


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sqlite(parsed: urllib.parse.SplitResult, data_dir: str) -> Snapshotter:
    from k8py.server.store import DEFAULT_SQLITE_PATH

    path = parsed.netloc + parsed.path or os.path.join(data_dir, DEFAULT_SQLITE_PATH)
    return SQLiteSnapshots(path)


def _etcd(parsed: urllib.parse.SplitResult, data_dir: str, **tls) -> Snapshotter:
    from k8py.server.store.etcdclient import parse_endpoints
    from k8py.server.store.etcdsnapshot import EtcdSnapshots

    try:
        endpoints = parse_endpoints(f"{parsed.scheme}://{parsed.netloc}{parsed.path}")
    except ValueError as exc:
        raise NoSnapshots(str(exc)) from None
    return EtcdSnapshots(endpoints, **tls)


SNAPSHOTTERS: dict[str, Callable[..., Snapshotter]] = {
    "sqlite": _sqlite,
    "http": _etcd,
    "https": _etcd,
}


def snapshotter(endpoint: str, data_dir: str, *, cafile: str | None = None,
                certfile: str | None = None, keyfile: str | None = None) -> Snapshotter:
    """The snapshotter for a datastore endpoint (`--datastore-endpoint`; "" is the data dir's
    embedded etcd if it has one, else SQLite under the data dir). The TLS files are an etcd
    endpoint's (`--datastore-cafile` etc.)."""
    tls = {k: v for k, v in (("cafile", cafile), ("certfile", certfile),
                             ("keyfile", keyfile)) if v}
    if not endpoint:
        from k8py.server.store.etcdsnapshot import EtcdSnapshots, embedded_member

        found = embedded_member(data_dir)
        if found is not None:
            member, endpoints, files = found
            return EtcdSnapshots(endpoints, member=member, **{**files, **tls})
    parsed = urllib.parse.urlsplit(endpoint or "sqlite://")
    factory = SNAPSHOTTERS.get(parsed.scheme)
    if factory is None:
        raise NoSnapshots(f"snapshots of the {parsed.scheme}:// datastore are not supported "
                          f"(supported: {', '.join(s + '://' for s in SNAPSHOTTERS)})")
    if parsed.scheme in ("http", "https"):
        return factory(parsed, data_dir, **tls)
    return factory(parsed, data_dir)
