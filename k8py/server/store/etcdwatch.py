"""One store watch over etcd's Watch stream, resumed across endpoint failures.

A background task holds a gRPC Watch stream (with `hasleader` set, as etcd's own client does,
so a member cut off from the cluster's leader cancels it instead of going quiet) and pushes each
response's events into a buffer the consumer iterates. The task remembers the revision after
the last event it received; when the stream breaks, or the member cancels it for losing its
leader, it re-opens on the next endpoint from that revision, so the consumer sees no gap and no
duplicate. etcd answering that the start revision is compacted ends the watch with `Compacted`;
no endpoint answering for the client's `retry_for` seconds ends it with `Unavailable`. A consumer
more than `max_buffered` events behind is dropped with `WatchExpired`, like the other backends'.

`progress` is the revision through which the watch has delivered every event: its last
event's, or the revision of etcd's progress notifications (asked for with `progress_notify`;
etcd sends them only to watchers that are caught up). A bookmark uses it: this client's own
`revision` may be ahead of the events still on their way, and a bookmark past an undelivered
event would make a resuming client skip it. (Explicit progress requests are not used: etcd
before 3.4.24/3.5.8 could answer them ahead of pending events, etcd-io/etcd#15220.)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from grpclib.exceptions import GRPCError, StreamTerminatedError

from k8py.server.store import etcd_grpc
from k8py.server.store import etcd_pb2 as pb
from k8py.server.store.backend import (
    Compacted,
    Event,
    EventType,
    KeyValue,
    Unavailable,
    WatchExpired,
)
from k8py.server.store.etcdclient import REQUIRE_LEADER, EtcdClient

log = logging.getLogger(__name__)


def range_end(prefix: bytes) -> bytes:
    """etcd's end of the range of keys starting with prefix (clientv3's GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def to_event(event: pb.Event) -> Event:
    key = event.kv.key.decode()
    prev = None
    if event.HasField("prev_kv"):
        p = event.prev_kv
        prev = KeyValue(key, p.value, p.create_revision, p.mod_revision)
    if event.type == pb.Event.DELETE:
        kv = KeyValue(key, b"", prev.create_revision if prev else 0, event.kv.mod_revision)
        return Event(EventType.DELETE, kv, prev)
    kv = KeyValue(key, event.kv.value, event.kv.create_revision, event.kv.mod_revision)
    return Event(EventType.CREATE if event.kv.version == 1 else EventType.UPDATE, kv, prev)


class EtcdWatch:
    def __init__(self, client: EtcdClient, prefix: str, start_revision: int, max_buffered: int,
                 *, on_compacted: Callable[[int], None], on_end: Callable[[EtcdWatch], None]):
        self.prefix = prefix
        self._client = client
        self._next_revision = start_revision
        self.progress = start_revision - 1
        self._max_buffered = max_buffered
        self._on_compacted = on_compacted
        self._on_end = on_end
        self._buffer: collections.deque[list[Event]] = collections.deque()
        self._buffered = 0
        self._wakeup = asyncio.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._task = asyncio.create_task(self._run(), name=f"etcd-watch {prefix}")

    def __aiter__(self) -> EtcdWatch:
        return self

    async def __anext__(self) -> list[Event]:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._buffer:
                batch = self._buffer.popleft()
                self._buffered -= len(batch)
                return batch
            if self._error is not None:
                raise self._error
            self._wakeup.clear()
            await self._wakeup.wait()

    def fail(self, error: BaseException) -> None:
        """End the watch with an error, raised once buffered events are consumed."""
        if self._error is None:
            self._error = error
        self._stop()

    def close(self) -> None:
        self._closed = True
        self._stop()

    def _stop(self) -> None:
        self._task.cancel()
        self._on_end(self)
        self._wakeup.set()

    def _push(self, events: list[Event]) -> None:
        if self._buffered + len(events) > self._max_buffered:
            self.fail(WatchExpired(f"watch on {self.prefix!r} fell too far behind"))
            return
        self._buffer.append(events)
        self._buffered += len(events)
        self._wakeup.set()

    async def _run(self) -> None:
        prefix = self.prefix.encode()
        deadline = time.monotonic() + self._client.retry_for
        delay = 0.05
        while True:
            try:
                index, channel = await self._client.connected()
            except OSError as exc:
                error: BaseException = exc
            else:
                try:
                    if await self._stream(channel, prefix):
                        return
                    error = Unavailable("the watch was cancelled")
                except (GRPCError, StreamTerminatedError, OSError, asyncio.TimeoutError) as exc:
                    error = exc
                deadline = time.monotonic() + self._client.retry_for  # it was up: start over
                delay = 0.05
                self._client._drop(index)
            if time.monotonic() + delay > deadline:
                self.fail(Unavailable(f"etcd watch on {self.prefix!r}: {error}"))
                return
            log.info("etcd watch on %r broke (%s); resuming from revision %d", self.prefix,
                     error, self._next_revision)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _stream(self, channel, prefix: bytes) -> bool:
        """Watch on one connection until it breaks (False) or the watch ends (True)."""
        stub = etcd_grpc.WatchStub(channel)
        async with stub.Watch.open(metadata=REQUIRE_LEADER) as stream:
            await stream.send_message(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=prefix, range_end=range_end(prefix), start_revision=self._next_revision,
                prev_kv=True, progress_notify=True)))
            while True:
                response = await stream.recv_message()
                if response is None:
                    return False
                self._client.seen(response.header)
                if response.compact_revision:
                    self._on_compacted(response.compact_revision)
                    self.fail(Compacted(self._next_revision, response.compact_revision))
                    return True
                if response.canceled:
                    log.info("etcd cancelled a watch: %s", response.cancel_reason)
                    return False
                if response.events:
                    events = [to_event(e) for e in response.events]
                    self._next_revision = events[-1].revision + 1
                    self.progress = events[-1].revision
                    self._push(events)
                    if self._error is not None:
                        return True
                elif not response.created and response.header.revision >= self._next_revision:
                    # a progress notification: nothing before the next revision is pending
                    self._next_revision = response.header.revision + 1
                    self.progress = response.header.revision
