"""The SQLite backend (`sqlite:///path/to/state.db`), the default: one file, durable, small.

Layout
    One table `kv`, one row per record (see `log.Record`): `revision INTEGER PRIMARY KEY`
    (the rowid, so history scans walk the table in order), and an index on
    `(key, revision, deleted)` that answers "newest version of each key at revision R" from the
    index alone. No row stores its old value (kine does, doubling the file): an event's previous
    value is the row its `prev_revision` points to, and compaction never deletes a row that a
    retained row points to. A `meta` table holds the schema version and the compact revision,
    so the revision never goes back even when compaction removes the newest row (a tombstone).

Durability
    WAL journal with `synchronous=FULL`: every commit fsyncs the WAL before it returns, so an
    acknowledged write survives SIGKILL and power loss. The group commit in `log.py` makes one
    transaction (one fsync) of every write that arrived while the previous one was syncing.

Staying small (k3s's most reported pain is a SQLite file of many GB)
    - Compaction runs by itself every second, keeping `retain` revisions of history, in windows
      of 500 revisions, each its own short transaction between write batches.
    - `auto_vacuum=INCREMENTAL` lets freed pages be returned to the file system after
      compaction, in slices of 1,024 pages each followed by a checkpoint (a vacuum moves
      pages through the WAL); until then SQLite reuses them for new rows.
    - The WAL is checkpointed automatically every 1,000 pages and truncated back to
      `journal_size_limit` after each checkpoint. Under a write storm the automatic
      (passive) checkpoints fall behind, so after any transaction that leaves the WAL over
      twice that limit, and after each compaction pass, a TRUNCATE checkpoint resets it.

Connections
    One writer connection (commits and compaction, serialised by the log's write lock) and one
    reader connection: in WAL mode reads never wait for a commit's fsync. Both run on aiosqlite's
    threads; SQLite releases the GIL while it works.

Bad files
    Start-up refuses, with a `CorruptStore` naming the file, anything that is not a SQLite
    database, a SQLite database that is not k8py's, or one that fails `PRAGMA quick_check`.
    A second process on the same file gets `StoreLocked`. Write errors (disk full, read-only
    file system, I/O error) roll the transaction back and fail that batch with `Unavailable`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterable

import aiosqlite

from k8py.server.store.backend import (
    CorruptStore,
    Event,
    KeyValue,
    StoreLocked,
    Unavailable,
)
from k8py.server.store.log import IndexEntry, LogBackend, Record, prefix_end, to_event

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
SQLITE_HEADER = b"SQLite format 3\x00"
WAL_LIMIT_BYTES = 4 * 1024 * 1024
VACUUM_SLICE_PAGES = 1024  # 4 MiB of pages moved per slice
VACUUM_SLICES_PER_PASS = 8

_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE kv (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX kv_key ON kv (key, revision, deleted);
"""

_INSERT = "INSERT INTO kv VALUES (?, ?, ?, ?, ?, ?, ?)"

_LIVE_KEYS = """
SELECT key, MAX(revision), create_revision, deleted, expires FROM kv GROUP BY key
"""

_LATEST = """
SELECT revision, key, value, create_revision, prev_revision, deleted, expires FROM kv
WHERE key = ? AND revision <= ? ORDER BY revision DESC LIMIT 1
"""

# SQLite takes bare columns (here `deleted`) from the row that holds the MAX().
_RANGE = """
SELECT kv.key, kv.value, kv.create_revision, kv.revision FROM (
    SELECT MAX(revision) AS revision, deleted FROM kv
    WHERE key >= ? AND key < ? AND key > ? AND revision <= ?
    GROUP BY key HAVING deleted = 0 LIMIT ?
) AS latest JOIN kv ON kv.revision = latest.revision
ORDER BY kv.key
"""

_COUNT = """
SELECT COUNT(*) FROM (
    SELECT MAX(revision), deleted FROM kv
    WHERE key >= ? AND key < ? AND revision <= ?
    GROUP BY key HAVING deleted = 0
)
"""

_HISTORY = """
SELECT kv.revision, kv.key, kv.value, kv.create_revision, kv.prev_revision, kv.deleted,
       kv.expires, prev.value
FROM kv LEFT JOIN kv AS prev ON prev.revision = kv.prev_revision
WHERE kv.revision >= ? AND kv.revision <= ? AND kv.key >= ? AND kv.key < ?
ORDER BY kv.revision LIMIT ?
"""

_COMPACT_SUPERSEDED = """
DELETE FROM kv WHERE revision IN (
    SELECT prev_revision FROM kv WHERE revision > ? AND revision <= ? AND prev_revision > 0
)
"""
_COMPACT_TOMBSTONES = "DELETE FROM kv WHERE revision > ? AND revision <= ? AND deleted = 1"
_SET_META = "INSERT OR REPLACE INTO meta VALUES (?, ?)"


class SQLiteBackend(LogBackend):
    def __init__(self, path: str, **options):
        super().__init__(**options)
        self.path = os.path.abspath(path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._lock_fd: int | None = None

    # --- opening ----------------------------------------------------------------------------

    async def _open(self) -> tuple[int, int, Iterable[tuple[str, IndexEntry]]]:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"{self.path}: {exc.strerror}") from exc
        self._take_lock()
        try:
            _check_header(self.path)
            # The database holds Secrets: create it owner-only; SQLite gives its WAL and
            # shared-memory files the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._writer = await aiosqlite.connect(self.path)
            revision, compact_revision = await self._prepare(self._writer)
            self._reader = await aiosqlite.connect(self.path)
            await self._reader.execute("PRAGMA query_only = ON")
            live = []
            async with self._reader.execute(_LIVE_KEYS) as cursor:
                async for key, mod, create, deleted, expires in cursor:
                    if not deleted:
                        live.append((key, IndexEntry(create, mod, expires)))
        except sqlite3.OperationalError as exc:  # the file is fine, its surroundings are not
            await self._close()
            raise Unavailable(f"{self.path}: cannot open the database: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            await self._close()
            raise CorruptStore(f"{self.path}: cannot use this database: {exc}") from exc
        except OSError as exc:
            await self._close()
            raise Unavailable(f"{self.path}: {exc.strerror}") from exc
        except BaseException:
            await self._close()
            raise
        log.info(
            "sqlite store %s open at revision %d (%d keys)", self.path, revision, len(live)
        )
        return revision, compact_revision, live

    def _take_lock(self) -> None:
        self._lock_fd = take_lock(self.path)

    async def _prepare(self, db: aiosqlite.Connection) -> tuple[int, int]:
        """Check or create the schema; return (revision, compact revision)."""
        (check,) = await (await db.execute("PRAGMA quick_check")).fetchone()
        if check != "ok":
            raise CorruptStore(f"{self.path} is damaged: {check}")
        tables = {row[0] for row in await db.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )}
        if not tables:
            # auto_vacuum must be chosen before the first table exists.
            await db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            await db.executescript(_SCHEMA)
            await db.execute(_SET_META, ("schema_version", SCHEMA_VERSION))
            await db.execute(_SET_META, ("compact_revision", 0))
            await db.commit()
        elif not {"meta", "kv"} <= tables:
            raise CorruptStore(f"{self.path} is a SQLite database, but not a k8py store")
        meta = dict(await db.execute_fetchall("SELECT name, value FROM meta"))
        if str(meta.get("schema_version")) != SCHEMA_VERSION:
            raise CorruptStore(
                f"{self.path} has store schema {meta.get('schema_version')!r}, "
                f"this k8py reads {SCHEMA_VERSION!r}"
            )
        (journal,) = await (await db.execute("PRAGMA journal_mode = WAL")).fetchone()
        if journal != "wal":
            raise Unavailable(f"{self.path}: cannot use WAL journal mode (got {journal})")
        for pragma in (
            "synchronous = FULL",
            "wal_autocheckpoint = 1000",
            f"journal_size_limit = {WAL_LIMIT_BYTES}",
            "busy_timeout = 5000",
        ):
            await db.execute(f"PRAGMA {pragma}")
        (max_revision,) = await (await db.execute("SELECT MAX(revision) FROM kv")).fetchone()
        compact_revision = int(meta.get("compact_revision") or 0)
        return max(max_revision or 0, compact_revision), compact_revision

    async def _close(self) -> None:
        for db in (self._writer, self._reader):
            if db is not None:
                with contextlib.suppress(Exception):
                    await db.close()
        self._writer = self._reader = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- writes -----------------------------------------------------------------------------

    async def _append(self, records: list[Record], prev_revisions: list[int]) -> dict[int, bytes]:
        prev_values = await self._values(prev_revisions) if prev_revisions else {}
        rows = [
            (r.revision, r.key, r.value, r.create_revision, r.prev_revision, r.deleted, r.expires)
            for r in records
        ]
        await self._write(lambda db: db.executemany(_INSERT, rows))
        await self._bound_wal()
        return prev_values

    async def _bound_wal(self) -> None:
        """Checkpoint now if automatic checkpoints fell behind a write storm, so the WAL stays
        within a small multiple of its limit instead of growing with the storm."""
        try:
            if os.path.getsize(self.path + "-wal") <= 2 * WAL_LIMIT_BYTES:
                return
            await self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except (OSError, sqlite3.Error) as exc:
            log.warning("checkpoint of %s failed: %s", self.path, exc)

    async def _values(self, revisions: list[int]) -> dict[int, bytes]:
        marks = ",".join("?" * len(revisions))
        rows = await self._reader.execute_fetchall(
            f"SELECT revision, value FROM kv WHERE revision IN ({marks})", revisions
        )
        return dict(rows)

    async def _write(self, *steps) -> None:
        """Run steps in one transaction on the writer and commit it (fsync), or roll back."""
        db = self._writer
        if db is None:
            raise Unavailable("store is closed")
        try:
            for step in steps:
                await step(db)
            await db.commit()
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                await db.rollback()
            raise Unavailable(f"{self.path}: write failed: {exc}") from exc

    # --- reads ------------------------------------------------------------------------------

    async def _query(self, sql: str, params: tuple) -> Iterable[sqlite3.Row]:
        if self._reader is None:
            raise Unavailable("store is closed")
        try:
            return await self._reader.execute_fetchall(sql, params)
        except sqlite3.Error as exc:
            raise Unavailable(f"{self.path}: read failed: {exc}") from exc

    async def _read_latest(self, key: str, revision: int) -> Record | None:
        rows = await self._query(_LATEST, (key, revision))
        return Record(*rows[0]) if rows else None

    async def _read_range(
        self, prefix: str, after: str, limit: int, revision: int
    ) -> tuple[list[KeyValue], bool]:
        rows = await self._query(
            _RANGE, (prefix, prefix_end(prefix), after, revision, limit + 1 if limit else -1)
        )
        items = [KeyValue(*row) for row in rows]
        if limit and len(items) > limit:
            return items[:limit], True
        return items, False

    async def _read_count(self, prefix: str, revision: int) -> int:
        rows = await self._query(_COUNT, (prefix, prefix_end(prefix), revision))
        return rows[0][0]

    async def _read_history(self, prefix: str, start: int, end: int, limit: int) -> list[Event]:
        rows = await self._query(_HISTORY, (start, end, prefix, prefix_end(prefix), limit))
        return [to_event(Record(*row[:7]), row[7]) for row in rows]

    # --- compaction -------------------------------------------------------------------------

    async def _compact_records(self, low: int, high: int) -> None:
        await self._write(
            lambda db: db.execute(_COMPACT_SUPERSEDED, (low, high)),
            lambda db: db.execute(_COMPACT_TOMBSTONES, (low, high)),
            lambda db: db.execute(_SET_META, ("compact_revision", high)),
        )
        await self._bound_wal()

    async def _after_compaction(self) -> None:
        """Give free pages back to the file system, a slice at a time: a vacuum moves pages,
        and every page it moves goes through the WAL, so one big vacuum would make one big
        WAL. Each slice is followed by a checkpoint that truncates the WAL."""
        db = self._writer
        try:
            for _ in range(VACUUM_SLICES_PER_PASS):
                (free,) = await (await db.execute("PRAGMA freelist_count")).fetchone()
                (pages,) = await (await db.execute("PRAGMA page_count")).fetchone()
                if not free or free * 4 < pages:
                    break
                # Python's execute() steps this pragma once, freeing one page; a script runs
                # it to the end.
                await db.executescript(f"PRAGMA incremental_vacuum({VACUUM_SLICE_PAGES});")
                # In WAL mode the file only shrinks when the WAL is checkpointed.
                await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await self._bound_wal()
        except sqlite3.Error as exc:
            log.warning("store maintenance of %s failed: %s", self.path, exc)

    async def _file_sizes(self) -> tuple[int, int]:
        def size(path: str) -> int:
            try:
                return os.path.getsize(path)
            except FileNotFoundError:
                return 0

        return size(self.path), size(self.path + "-wal")


def take_lock(path: str) -> int:
    """The exclusive lock on the database at `path` (its `.lock` file), held while the fd
    stays open: one server per file, and no restore under a running one."""
    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise Unavailable(f"{path}: cannot take the lock: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(f"{path} is in use by another k8py process") from None
    return fd


def _check_header(path: str) -> None:
    """Refuse a non-empty file that is not SQLite before SQLite gets to misread it."""
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    if header and header != SQLITE_HEADER:
        raise CorruptStore(f"{path} is not a SQLite database (it may be damaged or foreign)")
