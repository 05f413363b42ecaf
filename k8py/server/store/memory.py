"""The memory backend (`memory://`): the whole log in Python structures, for fast tests.

A first-class backend with the same semantics as the others (the shared suite runs against it),
minus durability: everything is gone when the process ends. Records live in a dict by revision;
a sorted list of keys and, per key, the ascending list of its revisions answer point and range
reads at any retained revision with bisection.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from k8py.server.store.backend import Event, KeyValue
from k8py.server.store.log import IndexEntry, LogBackend, Record, prefix_end, to_event


class MemoryBackend(LogBackend):
    compact_window = 1 << 62  # one pass: there is no disk to be gentle with

    def __init__(self, **options):
        super().__init__(**options)
        self._records: dict[int, Record] = {}
        self._log: list[int] = []  # retained revisions, ascending
        self._keys: list[str] = []  # keys with retained records, sorted
        self._versions: dict[str, list[int]] = {}  # key -> its retained revisions, ascending

    async def _open(self) -> tuple[int, int, Iterable[tuple[str, IndexEntry]]]:
        # Reopening a closed memory backend keeps its contents, like restarting a process
        # whose disk survived: the restart tests use this.
        live = []
        for key, revisions in self._versions.items():
            record = self._records[revisions[-1]]
            if not record.deleted:
                live.append(
                    (key, IndexEntry(record.create_revision, record.revision, record.expires))
                )
        return self._revision, self._compact_revision, live

    async def _close(self) -> None:
        pass

    async def _append(self, records: list[Record], prev_revisions: list[int]) -> dict[int, bytes]:
        for record in records:
            self._records[record.revision] = record
            self._log.append(record.revision)
            versions = self._versions.get(record.key)
            if versions is None:
                versions = self._versions[record.key] = []
                bisect.insort(self._keys, record.key)
            versions.append(record.revision)
        return {rev: self._records[rev].value for rev in prev_revisions}

    def _latest(self, key: str, revision: int) -> Record | None:
        versions = self._versions.get(key)
        if not versions:
            return None
        i = bisect.bisect_right(versions, revision)
        return self._records[versions[i - 1]] if i else None

    async def _read_latest(self, key: str, revision: int) -> Record | None:
        return self._latest(key, revision)

    def _live(self, prefix: str, after: str, revision: int):
        start = bisect.bisect_left(self._keys, prefix)
        if after:
            start = max(start, bisect.bisect_right(self._keys, after))
        end = bisect.bisect_left(self._keys, prefix_end(prefix))
        for key in self._keys[start:end]:
            record = self._latest(key, revision)
            if record is not None and not record.deleted:
                yield record

    async def _read_range(
        self, prefix: str, after: str, limit: int, revision: int
    ) -> tuple[list[KeyValue], bool]:
        items = []
        for record in self._live(prefix, after, revision):
            if limit and len(items) == limit:
                return items, True
            items.append(
                KeyValue(record.key, record.value, record.create_revision, record.revision)
            )
        return items, False

    async def _read_count(self, prefix: str, revision: int) -> int:
        return sum(1 for _ in self._live(prefix, "", revision))

    async def _read_history(self, prefix: str, start: int, end: int, limit: int) -> list[Event]:
        events = []
        for revision in self._log[bisect.bisect_left(self._log, start) :]:
            if revision > end or len(events) == limit:
                break
            record = self._records[revision]
            if record.key.startswith(prefix):
                prev = self._records.get(record.prev_revision)
                events.append(to_event(record, prev.value if prev else None))
        return events

    async def _compact_records(self, low: int, high: int) -> None:
        doomed = set()
        for revision in self._log[bisect.bisect_right(self._log, low) :]:
            if revision > high:
                break
            record = self._records[revision]
            if record.prev_revision:
                doomed.add(record.prev_revision)
            if record.deleted:
                doomed.add(revision)
        if not doomed:
            return
        touched = {self._records.pop(revision).key for revision in doomed}
        self._log = [r for r in self._log if r not in doomed]
        for key in touched:
            kept = [r for r in self._versions[key] if r not in doomed]
            if kept:
                self._versions[key] = kept
            else:
                del self._versions[key]
                del self._keys[bisect.bisect_left(self._keys, key)]
