"""Serving a watch: newline-delimited JSON events on a chunked 200 response.

- `resourceVersion` unset or "0": first an ADDED event for every existing object (upstream's
  "get state and start at most recent"), then changes. `resourceVersion=N`: changes after N.
- With a label or field selector, an object that stops matching is sent as DELETED and one
  that starts matching as ADDED, as upstream does (`transitions`).
These rules (`start`, `initial`, `transitions`) are the one set both transports follow: the
HTTP watch here and the in-process one (`inprocess`).
- A resourceVersion that is compacted, or a watcher that falls behind, gets one ERROR event
  carrying a 410 `Expired` Status, then the stream ends; the client relists. One the store
  has not reached after 3 s (only after a restore from an older snapshot) gets an ERROR
  event with upstream's 504 "Too large resource version": the client lists again instead
  of waiting while the new history passes under that number unseen.
- `allowWatchBookmarks=true`: a BOOKMARK (an object of the watched kind holding only
  `metadata.resourceVersion`) after each idle minute, so a client can resume cheaply.
- With a Table Accept header (`kubectl get -w`), each object is sent as a one-row Table;
  the column definitions ride with the first.
- `timeoutSeconds` ends the stream (default 30 minutes, as upstream's minimum request
  timeout), after which clients re-watch from the last version they saw.

Memory: a watch costs what it sends, not what the collection holds. The initial ADDED events
are written in small pieces from the stored bytes of one snapshot, which every watch that
starts at the same revision shares (`ObjectStore.snapshot`), never as a decoded copy of the
collection per watch, and at most CONCURRENT_INITIAL_SENDS watches send theirs at once (what
waits in a connection's buffers is bounded per connection, not per burst); later events are
decoded and serialized once for every watcher (`storage.WatchEvent`). A client that stops
reading gets WRITE_TIMEOUT to take the next chunk, after which its connection is closed and
its watch freed. Open watches are capped per user and in all (`WatchSlots`); past a cap a
watch is a 429 with Retry-After, which informers retry.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import json
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from k8py.api import errors, tables
from k8py.api.resources import Resource
from k8py.server.apiserver import queryparams
from k8py.server.apiserver.storage import (ObjectStore, ObjectWatch, Snapshot, WatchEvent,
                                           decode_bytes, line, parse_resource_version)

DEFAULT_TIMEOUT = 1800.0
BOOKMARK_INTERVAL = 60.0
WRITE_TIMEOUT = 30.0  # seconds a watcher has to take each chunk before it is cut off
CHUNK_BYTES = 16 * 1024  # the initial events are written in pieces of about this size
MAX_WATCHES_PER_USER = 2048
MAX_WATCHES = 8192
CONCURRENT_INITIAL_SENDS = 64


class WatchSlots:
    """Counts open watches per user and in all: `acquire` takes a slot or raises 429,
    `release` gives it back (and, when many watches have just ended, their memory)."""

    def __init__(self, per_user: int = MAX_WATCHES_PER_USER, total: int = MAX_WATCHES):
        self.per_user, self.total = per_user, total
        self._open: collections.Counter[str] = collections.Counter()
        self._all = 0
        self._peak = 0  # the most open since memory was last handed back
        # watches sending their initial events now: each has up to ~80 KiB in its socket's
        # and TLS buffers while it does, so a burst of thousands takes turns
        self.initial_sends = asyncio.Semaphore(CONCURRENT_INITIAL_SENDS)

    @property
    def open(self) -> int:
        """Watches open now, of every user."""
        return self._all

    def acquire(self, user: str) -> None:
        """Take a slot for `user`, or raise 429; every acquire is followed by a release."""
        if self._all >= self.total or self._open[user] >= self.per_user:
            raise errors.TooManyRequests("Too many requests, please try again later.",
                                         retry_after=1)
        self._open[user] += 1
        self._all += 1
        self._peak = max(self._peak, self._all)

    def release(self, user: str) -> None:
        self._all -= 1
        self._open[user] -= 1
        if not self._open[user]:
            del self._open[user]
        if self._peak >= TRIM_AFTER and self._all <= self._peak // 2:
            # many watches just ended: hand their memory back to the system, once per
            # halving (the allocator keeps freed memory otherwise, and RSS stays at the peak)
            self._peak = self._all
            _MALLOC_TRIM(0)


def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; musl has none, and needs none
    except (OSError, AttributeError):
        return lambda pad: None


_MALLOC_TRIM = _malloc_trim()
TRIM_AFTER = 64  # open watches: below this many, their memory is not worth a trim


# --- the watch rules, for every transport (HTTP here, in process in `inprocess`) ------------

async def start(objects: ObjectStore, resource: Resource, namespace: str | None,
                revision: int) -> tuple[Snapshot | None, ObjectWatch]:
    """Where a watch starts, by upstream's rules: without a resourceVersion (0), every
    object that exists now (a snapshot of stored bytes, shared by the watches that start at
    the same revision: keep it only while sending it) and then the changes after it; with
    one, the changes after it. Raises Expired (410) when that revision is compacted, and
    Timeout (504, too large) when the store has not reached it within a few seconds."""
    snapshot = None
    if revision == 0:
        snapshot = await objects.snapshot(resource, namespace)
        revision = snapshot.revision
    else:
        await objects.not_older_than(revision)
    return snapshot, objects.watch(resource, namespace, revision + 1)


def initial(items: list[bytes], matches) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    """A watch's first events, all ADDED: (stored bytes, the object decoded when a selector
    had to look at it, else None) for each object the selector matches."""
    for item in items:
        obj = None
        if matches is not None:
            obj = decode_bytes(item)
            if not matches(obj):
                continue
        yield item, obj


def transitions(events: list[WatchEvent], matches) -> Iterator[tuple[str, WatchEvent]]:
    """(event type to send, event) for the events a watcher with this selector (None: no
    selector) sees: a MODIFIED object that starts matching is ADDED for it, one that stops
    is DELETED."""
    for event in events:
        if matches is None:
            yield event.type, event
            continue
        now_matches = matches(event.object)
        if event.type == "MODIFIED" and now_matches != matches(event.previous):
            yield ("ADDED" if now_matches else "DELETED"), event
        elif now_matches:
            yield event.type, event


class _TableEvents:
    """Turns watched objects into one-row Tables; column definitions go with the first."""

    def __init__(self, resource: Resource, include: str):
        self.resource, self.include, self.sent_columns = resource, include, False

    def __call__(self, obj: dict[str, Any]) -> dict[str, Any]:
        body = tables.table(self.resource.group, self.resource.plural, [obj],
                            include_object=self.include,
                            list_metadata={"resourceVersion": obj["metadata"]["resourceVersion"]},
                            with_columns=not self.sent_columns)
        self.sent_columns = True
        return body


class _Stream:
    """The response's writes, each with a deadline: a client that stops reading is cut off
    (its transport aborted, so every buffer goes with it)."""

    def __init__(self, request: web.Request, response: web.StreamResponse):
        self.request, self.response = request, response

    async def write(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await self.response.write(data)
        except asyncio.TimeoutError:
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            raise ConnectionResetError("the watcher stopped reading") from None


async def serve_watch(request: web.Request, objects: ObjectStore, resource: Resource,
                      namespace: str | None, matches, slots: WatchSlots, user: str,
                      as_table: bool = False) -> web.StreamResponse:
    query = request.query
    revision = parse_resource_version(query.get("resourceVersion", ""))
    timeout = queryparams.int64(query, "timeoutSeconds", 0) or DEFAULT_TIMEOUT
    bookmarks = queryparams.boolean(query, "allowWatchBookmarks")
    include = query.get("includeObject", "Metadata")
    slots.acquire(user)
    try:
        render = _TableEvents(resource, include) if as_table else None
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        try:  # before the headers go, so other errors are Statuses
            snapshot, watch = await start(objects, resource, namespace, revision)
        except (errors.Expired, errors.Timeout) as exc:  # upstream: an ERROR event
            await response.prepare(request)
            await response.write(line("ERROR", exc.status()))
            return response
        await response.prepare(request)
        if request.transport is not None:  # pause this watch early: little waits in buffers
            request.transport.set_write_buffer_limits(high=CHUNK_BYTES)
        stream = _Stream(request, response)
        try:
            if snapshot is not None:
                async with slots.initial_sends:
                    await _initial(stream, snapshot.items, matches, render)
                snapshot = None  # the shared snapshot goes once its last watcher has sent it
            await _follow(stream, watch, resource, objects, matches, render,
                          time.monotonic() + max(timeout, 0), bookmarks)
        except errors.Expired as exc:  # the snapshot was compacted while a slow client read it
            with contextlib.suppress(ConnectionResetError):
                await stream.write(line("ERROR", exc.status()))
        except ConnectionResetError:
            pass  # the client went away, or stopped reading
        finally:
            watch.close()
        return response
    finally:
        slots.release(user)


async def _initial(stream: _Stream, items: list[bytes], matches, render) -> None:
    """ADDED for every object of the snapshot, from its stored bytes, in writes of about
    CHUNK_BYTES: what waits in this watch's buffers stays small however large the
    collection (each write waits for the client to drain the one before)."""
    chunk: list[bytes] = []
    size = 0
    for item, obj in initial(items, matches):
        if render is not None:
            event = line("ADDED", render(obj if obj is not None else json.loads(item)))
        else:
            event = b'{"type":"ADDED","object":' + item + b"}\n"
        chunk.append(event)
        size += len(event)
        if size >= CHUNK_BYTES:
            await stream.write(b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        await stream.write(b"".join(chunk))


async def _follow(stream: _Stream, watch, resource: Resource, objects: ObjectStore, matches,
                  render, deadline: float, bookmarks: bool) -> None:
    """Changes until the deadline: each event serialized once for all watchers where it
    goes out unchanged; re-rendered only for a selector's transition or a Table."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            async with asyncio.timeout(min(remaining, BOOKMARK_INTERVAL)):
                events = await watch.next()
        except asyncio.TimeoutError:
            if bookmarks and time.monotonic() < deadline:
                marker = {"kind": resource.kind, "apiVersion": resource.api_version,
                          "metadata": {"resourceVersion": str(
                              watch.progress(objects.backend.revision))}}
                await stream.write(line("BOOKMARK", marker))
            continue
        except errors.StatusError as exc:  # 410, or a value no encryption key opens (500)
            await stream.write(line("ERROR", exc.status()))
            return
        chunk = bytearray()
        for event_type, event in transitions(events, matches):
            if event_type == event.type and render is None:
                chunk += event.line()  # serialized once for all watchers
            else:
                chunk += line(event_type, render(event.object) if render else event.object)
        if chunk:
            await stream.write(bytes(chunk))
