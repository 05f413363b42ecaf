"""Watch fan-out: from committed write batches to every open watch, with history replay.

A watch is registered with the hub synchronously, at the moment `Backend.watch()` is called,
and remembers the last committed revision at that moment (`subscribed_at`). From then on every
committed batch is pushed to it. If it asked to start at or below `subscribed_at`, it first
replays history `[start_revision, subscribed_at]` from the backend, page by page, and only then
hands out what was pushed meanwhile. Because publishing happens on the event loop right after a
commit, and registration reads `subscribed_at` on the same loop, history and live events meet
exactly: no gap, no duplicate.

Each watch buffers at most `max_buffered` events. A watcher that falls further behind is
dropped with `WatchExpired` rather than letting the server's memory grow without bound; its
client re-watches from the last revision it saw (the API server's watch cache does the same
with slow watchers).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from k8py.server.store.backend import Compacted, Event, WatchExpired

# Reads one page of history: (prefix, first revision, last revision) -> events in order.
HistoryReader = Callable[[str, int, int], Awaitable[list[Event]]]


class WatchStream:
    """One open watch. Iterate for lists of events; `close()` ends it."""

    def __init__(
        self,
        hub: WatchHub,
        prefix: str,
        start_revision: int,
        subscribed_at: int,
        read_history: HistoryReader,
        compact_revision: Callable[[], int],
        max_buffered: int,
    ):
        self.prefix = prefix
        self._hub = hub
        self._next_revision = start_revision  # the lowest revision not yet delivered
        self._history_end = subscribed_at if start_revision <= subscribed_at else 0
        self._read_history = read_history
        self._compact_revision = compact_revision
        self._max_buffered = max_buffered
        self._buffer: collections.deque[list[Event]] = collections.deque()
        self._buffered = 0
        self._wakeup = asyncio.Event()
        self._error: BaseException | None = None
        self._closed = False

    def __aiter__(self) -> WatchStream:
        return self

    async def __anext__(self) -> list[Event]:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._history_end:
                events = await self._next_history_page()
                if events:
                    return events
                continue
            if self._buffer:
                batch = self._buffer.popleft()
                self._buffered -= len(batch)
                batch = [e for e in batch if e.revision >= self._next_revision]
                if batch:
                    self._next_revision = batch[-1].revision + 1
                    return batch
                continue
            if self._error is not None:
                raise self._error
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _next_history_page(self) -> list[Event]:
        start = self._next_revision
        if start <= self._compact_revision():
            self.close()
            raise Compacted(start, self._compact_revision())
        events = await self._read_history(self.prefix, start, self._history_end)
        # Compaction may have run while the page was read: trust the page only if the
        # revisions it covers are still above the compaction point.
        if start <= self._compact_revision():
            self.close()
            raise Compacted(start, self._compact_revision())
        if not events:
            self._next_revision = self._history_end + 1
            self._history_end = 0
            return []
        self._next_revision = events[-1].revision + 1
        if self._next_revision > self._history_end:
            self._history_end = 0
        return events

    def push(self, events: list[Event]) -> None:
        """Called by the hub with the events of one committed batch under this prefix."""
        if self._closed or self._error is not None:
            return
        if self._buffered + len(events) > self._max_buffered:
            self.fail(WatchExpired(f"watch on {self.prefix!r} fell too far behind"))
            return
        self._buffer.append(events)
        self._buffered += len(events)
        self._wakeup.set()

    def fail(self, error: BaseException) -> None:
        """End the watch with an error, raised once buffered events are consumed."""
        self._error = error
        self._hub.remove(self)
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self._hub.remove(self)
        self._wakeup.set()


class WatchHub:
    """The set of open watches, and fan-out of committed batches to them."""

    def __init__(self) -> None:
        self._streams: set[WatchStream] = set()

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: WatchStream) -> None:
        self._streams.add(stream)

    def remove(self, stream: WatchStream) -> None:
        self._streams.discard(stream)

    def publish(self, events: list[Event]) -> None:
        """Deliver one committed batch (in revision order) to every matching watch."""
        if not events or not self._streams:
            return
        for stream in list(self._streams):
            prefix = stream.prefix
            matching = [e for e in events if e.kv.key.startswith(prefix)]
            if matching:
                stream.push(matching)

    def fail_all(self, error: BaseException) -> None:
        for stream in list(self._streams):
            stream.fail(error)
