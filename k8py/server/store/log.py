"""The machinery shared by backends that keep the store as a log of key versions.

Like kine, a backend stores every write as one immutable **record** (revision, key, value,
create revision, the revision it replaced, a tombstone flag, an expiry time). `LogBackend` does
everything that does not depend on where records live; a subclass (`memory`, `sqlite`) only
appends records durably and answers reads over them.

Writes: the group commit
    Callers put operations on a pending list and await a future. One commit task takes every
    pending operation at once, checks each against the in-memory **key index** (key ->
    create revision, mod revision, expiry: no values), assigns consecutive revisions, and hands
    the whole batch to `_append`, which makes it durable in one transaction (one fsync). Only
    then are the index and the revision advanced, watchers notified and callers answered. While
    one batch is being made durable, new operations queue for the next: many writers share one
    fsync. Because a batch is checked only after the previous one is durable, a failed append
    simply fails its batch; nothing checked against it needs undoing.

Invariants
    - `revision` is the revision of the last durable write; it only grows.
    - The index holds exactly the live keys as of `revision` (the subclass loads it at start).
    - Compaction to C deletes every record superseded at or before C and every tombstone at or
      before C. The latest version of a key at C is never deleted, so any read at R >= C and
      any event after C still finds its previous value. `compact_revision` is raised *before*
      records are deleted, and reads re-check it after reading, so no read below it can return a
      half-compacted answer.
    - Compaction runs in windows of `compact_window` revisions, each its own short transaction
      taken between write batches, so writers never wait for more than one window.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
import heapq
import logging
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from k8py.server.store.backend import (
    Compacted,
    Conflict,
    Event,
    EventType,
    FutureRevision,
    KeyExists,
    KeyNotFound,
    KeyValue,
    RangeResult,
    Stats,
    StoreError,
    Unavailable,
)
from k8py.server.store.watching import WatchHub, WatchStream

log = logging.getLogger(__name__)

# Default number of revisions of history kept behind the current one (kine keeps 1,000 too).
DEFAULT_RETAIN = 1000
HISTORY_PAGE = 1000


@dataclasses.dataclass(slots=True)
class Record:
    """One durable version of a key: the row a backend stores."""

    revision: int
    key: str
    value: bytes
    create_revision: int
    prev_revision: int  # the version this one replaced; 0 for a create
    deleted: bool  # a tombstone: the key was deleted at `revision`
    expires: float  # unix time after which the key is deleted; 0 for never


class IndexEntry(NamedTuple):
    create_revision: int
    mod_revision: int
    expires: float


class _Kind(enum.Enum):
    CREATE = 1
    UPDATE = 2
    DELETE = 3


@dataclasses.dataclass(slots=True)
class _Op:
    kind: _Kind
    key: str
    value: bytes
    mod_revision: int
    ttl: float | None
    future: asyncio.Future


def to_event(record: Record, prev_value: bytes | None) -> Event:
    """The watch event a record stands for, given the value of the version it replaced."""
    prev = None
    if record.prev_revision:
        prev = KeyValue(record.key, prev_value or b"", record.create_revision, record.prev_revision)
    if record.deleted:
        kv = KeyValue(record.key, b"", record.create_revision, record.revision)
        return Event(EventType.DELETE, kv, prev)
    kv = KeyValue(record.key, record.value, record.create_revision, record.revision)
    return Event(EventType.UPDATE if prev else EventType.CREATE, kv, prev)


def prefix_end(prefix: str) -> str:
    """The smallest key greater than every key starting with prefix (etcd's range end)."""
    if not prefix:
        return chr(0x10FFFF)
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class LogBackend(abc.ABC):
    """A `Backend` over a log of records; subclasses provide storage (see module docstring)."""

    #: revisions covered by one compaction transaction
    compact_window = 5000
    #: the most operations committed in one batch
    max_batch = 2000

    def __init__(
        self,
        *,
        retain: int = DEFAULT_RETAIN,
        compact_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        max_watch_buffer: int = 100_000,
    ):
        self.retain = retain
        self.compact_interval = compact_interval
        self.clock = clock
        self._max_watch_buffer = max_watch_buffer
        self._revision = 0
        self._compact_revision = 0  # reads below this fail
        self._compacted_through = 0  # records superseded at or below this are deleted
        self._index: dict[str, IndexEntry] = {}
        self._expiry: list[tuple[float, str, int]] = []  # heap of (expires, key, mod_revision)
        self._pending: list[_Op] = []
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._write_lock = asyncio.Lock()  # one batch or one compaction window at a time
        self._hub = WatchHub()
        self._tasks: list[asyncio.Task] = []
        self._closed = True

    # --- what a subclass provides -------------------------------------------------------------

    @abc.abstractmethod
    async def _open(self) -> tuple[int, int, Iterable[tuple[str, IndexEntry]]]:
        """Open storage; return (revision, compact revision, live keys with their entries)."""

    @abc.abstractmethod
    async def _close(self) -> None: ...

    @abc.abstractmethod
    async def _append(self, records: list[Record], prev_revisions: list[int]) -> dict[int, bytes]:
        """Store records durably, all or nothing; return the values of `prev_revisions`."""

    @abc.abstractmethod
    async def _read_latest(self, key: str, revision: int) -> Record | None:
        """The newest record of key at or below revision (may be a tombstone)."""

    @abc.abstractmethod
    async def _read_range(
        self, prefix: str, after: str, limit: int, revision: int
    ) -> tuple[list[KeyValue], bool]:
        """Live keys under prefix, greater than `after`, as of revision; and whether more remain."""

    @abc.abstractmethod
    async def _read_count(self, prefix: str, revision: int) -> int: ...

    @abc.abstractmethod
    async def _read_history(self, prefix: str, start: int, end: int, limit: int) -> list[Event]:
        """Events under prefix with start <= revision <= end, oldest first, at most limit."""

    @abc.abstractmethod
    async def _compact_records(self, low: int, high: int) -> None:
        """Delete records superseded by, and tombstones at, revisions in (low, high]; record
        `high` as the compact revision. One transaction."""

    async def _after_compaction(self) -> None:
        """Give space back (checkpoint, vacuum), a bounded amount per call; called under the
        write lock on every tick of the compaction loop."""

    async def _file_sizes(self) -> tuple[int, int]:
        return 0, 0

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    async def current_revision(self) -> int:
        return self._revision  # the only writer: nothing newer exists elsewhere

    @property
    def compact_revision(self) -> int:
        return self._compact_revision

    async def start(self) -> None:
        self._revision, self._compact_revision, live = await self._open()
        self._compacted_through = self._compact_revision
        self._index = dict(live)
        self._expiry = [(e.expires, k, e.mod_revision) for k, e in self._index.items() if e.expires]
        heapq.heapify(self._expiry)
        self._closed = False
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="store-commit"),
            asyncio.create_task(self._expiry_loop(), name="store-expiry"),
            asyncio.create_task(self._compaction_loop(), name="store-compaction"),
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let queued writes finish (the commit loop sets _drained when it finds none left),
        # then stop the loops; the write lock waits out a batch still being committed.
        if self._pending:
            self._drained.clear()
            await self._drained.wait()
        async with self._write_lock:
            for task in self._tasks:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._hub.fail_all(Unavailable("store closed"))
        await self._close()

    # --- writes -----------------------------------------------------------------------------

    async def create(self, key: str, value: bytes, *, ttl: float | None = None) -> KeyValue:
        return await self._submit(_Kind.CREATE, key, value, 0, ttl)

    async def update(
        self, key: str, value: bytes, *, mod_revision: int, ttl: float | None = None
    ) -> KeyValue:
        if mod_revision <= 0:
            raise ValueError("update needs the mod_revision the caller last saw")
        return await self._submit(_Kind.UPDATE, key, value, mod_revision, ttl)

    async def delete(self, key: str, *, mod_revision: int = 0) -> KeyValue:
        return await self._submit(_Kind.DELETE, key, b"", mod_revision, None)

    def _submit(self, kind: _Kind, key: str, value: bytes, mod_revision: int, ttl: float | None):
        if self._closed:
            raise Unavailable("store is closed")
        if not key:
            raise ValueError("empty key")
        if not isinstance(value, bytes):
            raise TypeError("value must be bytes")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Op(kind, key, value, mod_revision, ttl, future))
        self._wakeup.set()
        return future

    async def _commit_loop(self) -> None:
        while True:
            if not self._pending:
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            async with self._write_lock:
                try:
                    await self._commit(batch)
                except Exception as exc:  # never let one batch kill the loop
                    log.exception("store commit failed")
                    for op in batch:
                        if not op.future.done():
                            op.future.set_exception(Unavailable(f"store commit failed: {exc}"))

    async def _commit(self, batch: list[_Op]) -> None:
        """Check a batch against the index, make it durable, then publish it."""
        staged: dict[str, IndexEntry | None] = {}
        accepted: list[tuple[_Op, Record]] = []
        revision = self._revision
        now = self.clock()
        for op in batch:
            if op.future.done():  # the caller gave up before we got to it
                continue
            current = staged[op.key] if op.key in staged else self._index.get(op.key)
            error = _check(op, current)
            if error is not None:
                op.future.set_exception(error)
                continue
            revision += 1
            if op.kind is _Kind.CREATE:
                create_revision, prev_revision = revision, 0
            else:
                create_revision, prev_revision = current.create_revision, current.mod_revision
            expires = now + op.ttl if op.ttl else 0.0
            deleted = op.kind is _Kind.DELETE
            record = Record(
                revision, op.key, op.value, create_revision, prev_revision, deleted, expires
            )
            staged[op.key] = None if deleted else IndexEntry(create_revision, revision, expires)
            accepted.append((op, record))
        if not accepted:
            return

        records = [record for _, record in accepted]
        older = [r.prev_revision for r in records if 0 < r.prev_revision <= self._revision]
        try:
            prev_values = await self._append(records, older)
        except StoreError as exc:
            self._fail(accepted, exc)
            return
        except Exception as exc:
            self._fail(accepted, Unavailable(f"write failed: {exc}"))
            return

        for key, entry in staged.items():
            if entry is None:
                self._index.pop(key, None)
            else:
                self._index[key] = entry
                if entry.expires:
                    heapq.heappush(self._expiry, (entry.expires, key, entry.mod_revision))
        self._revision = revision
        for record in records:
            prev_values.setdefault(record.revision, record.value)
        events = [to_event(r, prev_values.get(r.prev_revision)) for r in records]
        self._hub.publish(events)
        for (op, _), event in zip(accepted, events):
            if not op.future.done():
                op.future.set_result(event.prev if op.kind is _Kind.DELETE else event.kv)

    def _fail(self, accepted: list[tuple[_Op, Record]], error: StoreError) -> None:
        log.error("store write of %d records failed: %s", len(accepted), error)
        for op, _ in accepted:
            if not op.future.done():
                op.future.set_exception(error)

    # --- reads ------------------------------------------------------------------------------

    def _read_revision(self, revision: int) -> int:
        if revision < 0:
            raise ValueError("negative revision")
        if revision == 0:
            return self._revision
        if revision > self._revision:
            raise FutureRevision(revision, self._revision)
        if revision < self._compact_revision:
            raise Compacted(revision, self._compact_revision)
        return revision

    def _recheck(self, revision: int) -> None:
        if revision < self._compact_revision:
            raise Compacted(revision, self._compact_revision)

    def expires(self, key: str) -> float:
        """The unix time a live key's TTL ends (0: none, or no such key); for migration."""
        entry = self._index.get(key)
        return entry.expires if entry else 0.0

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        if revision == 0 and key not in self._index:
            return None
        at = self._read_revision(revision)
        record = await self._read_latest(key, at)
        self._recheck(at)
        if record is None or record.deleted:
            return None
        return KeyValue(record.key, record.value, record.create_revision, record.revision)

    async def range(
        self, prefix: str, *, after: str | None = None, limit: int = 0, revision: int = 0
    ) -> RangeResult:
        at = self._read_revision(revision)
        items, more = await self._read_range(prefix, after or "", max(limit, 0), at)
        self._recheck(at)
        return RangeResult(at, items, more)

    async def count(self, prefix: str, *, revision: int = 0) -> tuple[int, int]:
        at = self._read_revision(revision)
        n = await self._read_count(prefix, at)
        self._recheck(at)
        return at, n

    def watch(self, prefix: str, *, start_revision: int = 0) -> WatchStream:
        if self._closed:
            raise Unavailable("store is closed")
        start = start_revision or self._revision + 1
        if start <= self._compact_revision:
            raise Compacted(start, self._compact_revision)
        stream = WatchStream(
            self._hub,
            prefix,
            start,
            self._revision,
            self._history_page,
            lambda: self._compact_revision,
            self._max_watch_buffer,
        )
        self._hub.add(stream)
        return stream

    async def _history_page(self, prefix: str, start: int, end: int) -> list[Event]:
        return await self._read_history(prefix, start, end, HISTORY_PAGE)

    async def stats(self) -> Stats:
        db_bytes, wal_bytes = await self._file_sizes()
        return Stats(self._revision, self._compact_revision, len(self._index), db_bytes, wal_bytes)

    # --- expiry -----------------------------------------------------------------------------

    async def _expiry_loop(self) -> None:
        while True:
            now = self.clock()
            while self._expiry and self._expiry[0][0] <= now:
                _, key, mod_revision = heapq.heappop(self._expiry)
                entry = self._index.get(key)
                if entry is not None and entry.mod_revision == mod_revision:
                    # A compare-and-swap delete: loses harmlessly to a concurrent write.
                    self._submit(_Kind.DELETE, key, b"", mod_revision, None).add_done_callback(
                        _ignore_result
                    )
            delay = 1.0
            if self._expiry:
                delay = min(delay, max(self._expiry[0][0] - now, 0.01))
            await asyncio.sleep(delay)

    # --- compaction -------------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Discard history below revision, in windows that let writers through in between."""
        if revision > self._revision:
            raise FutureRevision(revision, self._revision)
        self._compact_revision = max(self._compact_revision, revision)
        # Resume where the last pass stopped, even if that pass failed half-way.
        while self._compacted_through < revision:
            high = min(self._compacted_through + self.compact_window, revision)
            async with self._write_lock:
                await self._compact_records(self._compacted_through, high)
            self._compacted_through = high

    async def _compaction_loop(self) -> None:
        while True:
            await asyncio.sleep(self.compact_interval)
            target = max(self._revision - self.retain, self._compact_revision)
            try:
                if target > self._compacted_through:
                    await self.compact(target)
                # Space freed by this pass or earlier ones goes back a slice at a time.
                async with self._write_lock:
                    await self._after_compaction()
            except StoreError as exc:
                log.warning("compaction to %d failed, will retry: %s", target, exc)
            except Exception:
                log.exception("compaction to %d failed, will retry", target)


def _check(op: _Op, current: IndexEntry | None) -> StoreError | None:
    """Why op cannot apply to the key's current entry, or None if it can."""
    if op.kind is _Kind.CREATE:
        return KeyExists(op.key) if current is not None else None
    if current is None:
        return KeyNotFound(op.key)
    if op.mod_revision and op.mod_revision != current.mod_revision:
        return Conflict(op.key, op.mod_revision, current.mod_revision)
    return None


def _ignore_result(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
