"""The store contract: what every backend promises, with etcd's semantics.

The store is a map from string keys (`/registry/<group>/<resource>/<namespace>/<name>`) to
byte values, versioned by one global **revision**:

- Every successful write (create, update, delete, expiry) gets the next revision. The revision
  only grows, across restarts and compactions. A key's `mod_revision` is the revision of its last
  write; its `create_revision` the revision that created it. The API server uses `mod_revision`
  as the object's `resourceVersion`.
- `create` fails with `KeyExists` if the key exists. `update` and `delete` are compare-and-swap:
  they carry the `mod_revision` the caller last saw and fail with `Conflict` if the key has moved
  on (or `KeyNotFound` if it is gone). `delete` with `mod_revision=0` is unconditional.
- A write is acknowledged only once it is durable (for persistent backends: fsynced).
- Reads can be served at any revision that has not been compacted: `get` and `range` at
  revision R see exactly the state after the write with revision R. A `range` returns its
  revision so later pages (`after=` the last key) read the same snapshot.
- `watch(prefix, start_revision)` yields every event on keys under the prefix with revision
  >= start_revision, in revision order, with no gap and no duplicate, each carrying the previous
  value of the key. Events of one write batch arrive together, as one list.
- `compact(R)` discards history older than R; reads below R and watches starting at or below R
  then fail with `Compacted`. Backends also compact by themselves, keeping a bounded history.
- Keys written with a `ttl` are deleted (a normal delete, seen by watchers) once it elapses.

Errors are the sentinels below, mapped to Kubernetes `Status` errors in one place by the API
server (kine's `server/types.go` plays the same role).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator
from typing import Protocol


@dataclasses.dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of one key."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


class EventType(enum.Enum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """A change to one key. `kv` is the new version (for DELETE: the key with an empty value at
    the delete's revision); `prev` is the version it replaced (None for CREATE)."""

    type: EventType
    kv: KeyValue
    prev: KeyValue | None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclasses.dataclass(frozen=True, slots=True)
class RangeResult:
    """One page of a range read. `more` says keys remain after the last one returned."""

    revision: int
    items: list[KeyValue]
    more: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Stats:
    """Sizes a backend reports; file sizes are 0 for backends without files."""

    revision: int
    compact_revision: int
    keys: int
    db_bytes: int = 0
    wal_bytes: int = 0


class Watch(Protocol):
    """An open watch: iterate it for lists of events; close it when done."""

    def __aiter__(self) -> AsyncIterator[list[Event]]: ...

    async def __anext__(self) -> list[Event]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    """The store contract (see the module docstring for the semantics)."""

    @property
    def revision(self) -> int:
        """The revision of the last acknowledged write."""

    @property
    def compact_revision(self) -> int:
        """History at or below this revision is gone."""

    async def current_revision(self) -> int:
        """The store's newest revision now, asked of the store itself: with several API
        servers on one store (etcd), `revision` knows only what this one has seen, while
        every write acknowledged before this call is at or below the answer."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None: ...

    async def create(self, key: str, value: bytes, *, ttl: float | None = None) -> KeyValue: ...

    async def update(
        self, key: str, value: bytes, *, mod_revision: int, ttl: float | None = None
    ) -> KeyValue: ...

    async def delete(self, key: str, *, mod_revision: int = 0) -> KeyValue:
        """Delete the key; returns the version that was deleted."""

    async def range(
        self, prefix: str, *, after: str | None = None, limit: int = 0, revision: int = 0
    ) -> RangeResult: ...

    async def count(self, prefix: str, *, revision: int = 0) -> tuple[int, int]:
        """(revision, number of keys under prefix at that revision)."""

    def watch(self, prefix: str, *, start_revision: int = 0) -> Watch:
        """start_revision 0 means: from the next write on."""

    async def compact(self, revision: int) -> None: ...

    async def stats(self) -> Stats: ...


# --- errors ---------------------------------------------------------------------------------


class StoreError(Exception):
    """Base of every store error."""


class KeyExists(StoreError):
    def __init__(self, key: str):
        super().__init__(f"key already exists: {key}")
        self.key = key


class KeyNotFound(StoreError):
    def __init__(self, key: str):
        super().__init__(f"key not found: {key}")
        self.key = key


class Conflict(StoreError):
    """The key's mod_revision is not the one the caller expected."""

    def __init__(self, key: str, expected: int, actual: int):
        super().__init__(f"conflict on {key}: expected revision {expected}, found {actual}")
        self.key = key
        self.expected = expected
        self.actual = actual


class Compacted(StoreError):
    """The requested revision has been compacted away."""

    def __init__(self, requested: int, compact_revision: int):
        super().__init__(
            f"required revision {requested} has been compacted (compacted up to {compact_revision})"
        )
        self.requested = requested
        self.compact_revision = compact_revision


class FutureRevision(StoreError):
    """The requested revision has not been written yet."""

    def __init__(self, requested: int, current: int):
        super().__init__(f"required revision {requested} is a future revision (current {current})")
        self.requested = requested
        self.current = current


class Unavailable(StoreError):
    """The store cannot take the write or read now (disk full, read-only, I/O error, closed).
    Nothing was written."""


class WatchExpired(StoreError):
    """The watcher fell too far behind and was dropped; re-watch from its last revision."""


class CorruptStore(StoreError):
    """The database file cannot be used: not a SQLite file, not k8py's, or damaged."""


class StoreLocked(StoreError):
    """Another process holds the database."""
