"""Kubernetes objects over the store: encoding, keys, resourceVersions, and store errors
mapped to `Status` errors — once, here (kine's server/ layer does the same for etcd).

Objects are stored as kube-apiserver writes them (`k8py.api.encoding`) without
`metadata.resourceVersion`; on the way out the store revision of the object's last write is
put back as its resourceVersion (where Go's ObjectMeta has it, after uid), so it can never
disagree with the store. Plain GETs and LISTs splice it into the stored bytes
(`raw`) and never decode the object: that is most of the API server's read speed and memory.
A list's resourceVersion is the revision it was read at.

Lists
    `limit`/`continue` page through one snapshot: the continue token carries the revision of
    the first page and the last key returned (upstream's `{"v","rv","start"}` token). Label
    and field selectors filter after reading, and reading goes on until the page is full, as
    upstream's etcd3 storage does. A token whose revision has been compacted is a 410.

Versions
    A kind served in several versions is stored in one (`Resource.storage_version`):
    objects are converted to it on the way in and to the version asked for on the way out
    (`k8py.api.conversion`), as upstream's storage codec does. Only those resources pay
    for decoding on reads; every other read keeps the raw bytes.

Writes
    A write that loses its compare-and-swap raises `errors.LostRace` (a 409 to clients);
    `guaranteed` reruns a read-modify-write until it wins, within the request's deadline.

Encryption at rest
    With an `Encryption` (`--encryption-provider-config`, `--secrets-encryption`), the
    bytes of the resources it names are sealed on the way to the store and opened on every
    way back (`_opened`: get, list, pages and snapshots, watch events and their previous
    values, what a delete returns), keyed by the object's store key, as upstream's storage
    transformers (`encryption`). Resources it does not name keep the fast paths untouched;
    the raw paths of named ones splice into the opened bytes, still without decoding them.
    A value no configured key opens is a 500 (`Internal error occurred: ...`), as upstream.
    `reencrypt` rewrites a resource's objects with the key that now writes, each by
    compare-and-swap: a write racing it is never lost (the object is read again and,
    unless that write already used the new key, rewritten).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import weakref
from sys import intern
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from k8py.api import conversion, encoding, errors
from k8py.api.resources import Resource
from k8py.server.apiserver.encryption import (ENCRYPTED_PREFIX, PrefixTransformers,
                                              TransformError)
from k8py.server.apiserver.encryptionconfig import Encryption
from k8py.server.store import backend as store_errors
from k8py.server.store.backend import Backend, EventType, KeyValue

Matcher = Callable[[dict[str, Any]], bool]
T = TypeVar("T")

FRESHNESS_WAIT = 3.0  # seconds a read or watch at a future resourceVersion waits for it

_EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


_METADATA_OPEN = b'{"metadata":{'  # how objects were stored before they were in Go's order
_METADATA_KEY = b'"metadata":{'
_UID_KEY = b'"uid":"'
_UID_WINDOW = 700  # bytes: name, generateName and namespace, the fields before uid, fit in it


def encode(obj: dict[str, Any]) -> bytes:
    """The object as kube-apiserver would write it (`encoding`: Go's field order, compact),
    without resourceVersion (see `raw`). allow_nan is off: what is stored must be JSON every
    client can read back (request decoding refuses NaN already; this keeps any other path
    from storing it)."""
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return encoding.compact({**obj, "metadata": metadata})


def raw(kv: KeyValue) -> bytes:
    """The stored JSON with its resourceVersion spliced in where Go writes it (right after
    `uid`), without decoding it. Objects stored by an older k8py start with `{"metadata":{`
    and get it first in metadata."""
    value = kv.value
    field = b'"resourceVersion":"%d"' % kv.mod_revision
    if value.startswith(_METADATA_OPEN):
        return _first_in_metadata(value, len(_METADATA_OPEN), field)
    meta = value.find(_METADATA_KEY, 0, 200)
    if meta < 0:
        return encoding.compact(decode(kv))
    start = meta + len(_METADATA_KEY)
    uid = value.find(_UID_KEY, start, start + _UID_WINDOW)
    if uid < 0:
        return _first_in_metadata(value, start, field)
    end = value.index(b'"', uid + len(_UID_KEY)) + 1
    return value[:end] + b"," + field + value[end:]


def _first_in_metadata(value: bytes, start: int, field: bytes) -> bytes:
    """value with field put first in the metadata object that opens at `start`."""
    comma = b"," if value[start:start + 1] != b"}" else b""
    return value[:start] + field + comma + value[start:]


def _interned(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {intern(k): intern(v) if v.__class__ is str and len(v) < INTERN_BELOW else v
            for k, v in pairs}


INTERN_BELOW = 40  # characters: names, enums, images, timestamps repeat across objects


def decode(kv: KeyValue) -> dict[str, Any]:
    """The stored object, with its resourceVersion. Keys and short strings are interned:
    decoded objects live on in watch caches and informers, where thousands of pods repeat
    the same keys and values; shared strings halve their memory for ~20 µs per decode."""
    try:
        obj = decode_bytes(kv.value)
    except ValueError:
        if kv.value.startswith(ENCRYPTED_PREFIX):  # encrypted, and no configuration opens it
            raise _unreadable(kv.key, "identity transformer tried to read encrypted data",
                              False) from None
        raise
    obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
    return obj


def decode_bytes(data: bytes) -> dict[str, Any]:
    """An object from bytes `raw` made (resourceVersion already in), interned as `decode`."""
    return json.loads(data, object_pairs_hook=_interned)


def decode_as(resource: Resource, kv: KeyValue) -> dict[str, Any]:
    """The stored object as `resource`'s version serves it."""
    obj = decode(kv)
    return conversion.convert(obj, resource.api_version) if resource.converts else obj


def raw_as(resource: Resource, kv: KeyValue) -> bytes:
    """`raw`, for `resource`'s version (decoded and converted only when it differs)."""
    return encoding.compact(decode_as(resource, kv)) if resource.converts else raw(kv)


def encode_for(resource: Resource, obj: dict[str, Any]) -> bytes:
    """`encode`, in `resource`'s storage version."""
    if resource.converts:
        obj = conversion.convert(obj, resource.storage_api_version)
    return encode(obj)


def parse_resource_version(value: str | None, what: str = "resourceVersion") -> int:
    if not value:
        return 0
    # a revision is an int64 in the store (SQLite's integer); anything else names no revision
    if not (isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19
            and int(value) < 2 ** 63):
        raise errors.BadRequest(f"invalid {what}: {str(value)[:40]!r}")
    return int(value)


def encode_continue(revision: int, last_key: str, prefix: str) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": revision, "start": last_key[len(prefix):] + "\x00"}
    return base64.urlsafe_b64encode(json.dumps(token).encode()).decode()


def decode_continue(token: str, prefix: str) -> tuple[int, str]:
    """(revision, key to continue after) from a continue token."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        revision, start = int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError):
        raise errors.BadRequest("continue key is not valid: bad token") from None
    # The start key is read relative to the list's own prefix, and the read is bounded by
    # that prefix, so a token can never reach outside the collection it came from.
    if data.get("v") != "meta.k8s.io/v1" or revision <= 0:
        raise errors.BadRequest("continue key is not valid: unknown token")
    return revision, prefix + start.rstrip("\x00")


REQUEST_DEADLINE = 60.0  # seconds: upstream's default --request-timeout
_BACKOFF_FIRST, _BACKOFF_CAP = 0.001, 0.05


async def guaranteed(step: Callable[[], Awaitable[T]], deadline: float = REQUEST_DEADLINE
                     ) -> T:
    """`step()` (read, decide, write) again and again while its write loses a race to
    another writer (`errors.LostRace`), until it wins or the request's deadline passes:
    upstream's GuaranteedUpdate. Between tries a jittered, growing pause (1 ms doubling, at
    most 50 ms) keeps many writers of one object from retrying in lockstep, so none starves.
    Any other error, a Conflict the step raised itself among them, ends it at once."""
    give_up = time.monotonic() + deadline
    pause = _BACKOFF_FIRST
    while True:
        try:
            return await step()
        except errors.LostRace:
            if time.monotonic() >= give_up:
                raise
        await asyncio.sleep(random.uniform(0, pause))
        pause = min(pause * 2, _BACKOFF_CAP)


class ObjectStore:
    """CRUD, list and watch of objects of any resource, over one Backend. Each store call
    is timed for `observe` when set (the API server's etcd_request_duration_seconds)."""

    def __init__(self, backend: Backend, encryption: Encryption | None = None):
        self.backend = backend
        self.encryption = encryption
        self._events: dict[tuple[str, int, str], WatchEvent] = {}  # see ObjectWatch
        # see snapshot(): the latest one per prefix, while anyone holds it
        self._snapshots: weakref.WeakValueDictionary[str, Snapshot] = \
            weakref.WeakValueDictionary()
        self._snapshot_reads: dict[str, asyncio.Future[Snapshot]] = {}
        #: told of each store call: (operation, resource, seconds) (`metrics`)
        self.observe: Callable[[str, Resource, float], None] | None = None

    def _observed(self, operation: str, resource: Resource, start: float) -> None:
        if self.observe is not None:
            self.observe(operation, resource, time.monotonic() - start)

    async def _read(self, resource: Resource, namespace: str | None, name: str) -> KeyValue:
        """The object now (a read at a resourceVersion is `not_older_than`, then this)."""
        start = time.monotonic()
        try:
            kv = await self.backend.get(resource.key(namespace, name))
        except store_errors.StoreError as exc:
            raise _status(exc, resource, name) from exc
        finally:
            self._observed("get", resource, start)
        if kv is None:
            raise errors.not_found(resource.plural, name, resource.group)
        return self._opened(resource, kv)

    def _transformer(self, resource: Resource) -> PrefixTransformers | None:
        return None if self.encryption is None else self.encryption.transformer(resource)

    def _opened(self, resource: Resource, kv: KeyValue, listing: bool = False,
                transformer: PrefixTransformers | None = None) -> KeyValue:
        """kv with the value as it was before encryption (kv itself for a resource stored
        in the clear)."""
        transformer = transformer or self._transformer(resource)
        if transformer is None:
            return kv
        try:
            value, _ = transformer.from_storage(kv.value, kv.key.encode())
        except TransformError as exc:
            raise _unreadable(kv.key, str(exc), listing) from None
        # AES-CBC authenticates nothing: a wrong or damaged first or last block shows here
        if value[:1] != b"{" or value[-1:] != b"}":
            raise _unreadable(kv.key, "the stored data is not a JSON object once decrypted",
                              listing)
        return KeyValue(kv.key, value, kv.create_revision, kv.mod_revision)

    def _sealed(self, resource: Resource, key: str, data: bytes) -> bytes:
        transformer = self._transformer(resource)
        return data if transformer is None else transformer.to_storage(data, key.encode())

    async def get(self, resource: Resource, namespace: str | None, name: str
                  ) -> dict[str, Any]:
        return decode_as(resource, await self._read(resource, namespace, name))

    async def get_raw(self, resource: Resource, namespace: str | None, name: str) -> bytes:
        """The object as JSON bytes, never decoded (the fast path for plain GETs)."""
        return raw_as(resource, await self._read(resource, namespace, name))

    async def create(self, resource: Resource, obj: dict[str, Any],
                     ttl: float | None = None) -> dict[str, Any]:
        meta = obj["metadata"]
        key = resource.key(meta.get("namespace"), meta["name"])
        data = encode_for(resource, obj)
        start = time.monotonic()
        try:
            kv = await self.backend.create(key, self._sealed(resource, key, data), ttl=ttl)
        except store_errors.StoreError as exc:
            raise _status(exc, resource, meta["name"]) from exc
        finally:
            self._observed("create", resource, start)
        return _written(resource, obj, kv, data)

    async def update(self, resource: Resource, obj: dict[str, Any], revision: int,
                     ttl: float | None = None) -> dict[str, Any]:
        meta = obj["metadata"]
        key = resource.key(meta.get("namespace"), meta["name"])
        data = encode_for(resource, obj)
        start = time.monotonic()
        try:
            kv = await self.backend.update(key, self._sealed(resource, key, data),
                                           mod_revision=revision, ttl=ttl)
        except store_errors.StoreError as exc:
            raise _status(exc, resource, meta["name"]) from exc
        finally:
            self._observed("update", resource, start)
        return _written(resource, obj, kv, data)

    async def delete(self, resource: Resource, namespace: str | None, name: str,
                     revision: int = 0) -> dict[str, Any]:
        start = time.monotonic()
        try:
            kv = await self.backend.delete(resource.key(namespace, name), mod_revision=revision)
        except store_errors.StoreError as exc:
            raise _status(exc, resource, name) from exc
        finally:
            self._observed("delete", resource, start)
        return decode_as(resource, self._opened(resource, kv))

    async def list(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        matches: Matcher | None = None,
        limit: int = 0,
        continue_token: str = "",
        revision: int = 0,
        as_bytes: bool = False,
    ) -> tuple[list[Any], int, str]:
        """(items, revision, continue token or ''). Items are dicts, or JSON bytes with
        `as_bytes` (decoded only when a selector must look at them)."""
        prefix = resource.prefix(namespace)
        after = None
        if continue_token:
            revision, after = decode_continue(continue_token, prefix)
        items: list[Any] = []
        transformer = self._transformer(resource)
        try:
            while True:
                want = limit - len(items) if limit else 0
                start = time.monotonic()
                try:
                    page = await self.backend.range(
                        prefix, after=after, limit=max(want, 100) if limit else 0,
                        revision=revision,
                    )
                finally:
                    self._observed("list", resource, start)
                revision = page.revision
                for kv in page.items:
                    if transformer is not None:
                        kv = self._opened(resource, kv, True, transformer)
                    if matches is not None:
                        obj = decode_as(resource, kv)
                        if not matches(obj):
                            continue
                        items.append(raw_as(resource, kv) if as_bytes else obj)
                    else:
                        items.append(raw_as(resource, kv) if as_bytes
                                     else decode_as(resource, kv))
                    if limit and len(items) == limit:
                        more = page.more or kv.key != page.items[-1].key
                        token = encode_continue(revision, kv.key, prefix) if more else ""
                        return items, revision, token
                if not page.more:
                    return items, revision, ""
                after = page.items[-1].key
        except store_errors.Compacted as exc:
            if continue_token:
                raise errors.Expired(_EXPIRED_CONTINUE) from exc
            raise _status(exc, resource, "") from exc
        except store_errors.StoreError as exc:
            raise _status(exc, resource, "") from exc

    async def pages(self, resource: Resource, namespace: str | None, *,
                    matches: Matcher | None = None, revision: int = 0, page_size: int = 500
                    ) -> AsyncIterator[tuple[int, list[bytes]]]:
        """A whole list as (revision, JSON bytes of a page of items), page by page, all at the
        revision of the first page: memory stays bounded by one page however long the list."""
        prefix = resource.prefix(namespace)
        after = None
        transformer = self._transformer(resource)
        while True:
            start = time.monotonic()
            try:
                page = await self.backend.range(prefix, after=after, limit=page_size,
                                                revision=revision)
            except store_errors.StoreError as exc:
                raise _status(exc, resource, "") from exc
            finally:
                self._observed("list", resource, start)
            revision = page.revision
            items = []
            for kv in page.items:
                if transformer is not None:
                    kv = self._opened(resource, kv, True, transformer)
                if matches is None or matches(decode_as(resource, kv)):
                    items.append(raw_as(resource, kv))
            yield revision, items
            if not page.more:
                return
            after = page.items[-1].key

    async def snapshot(self, resource: Resource, namespace: str | None) -> Snapshot:
        """Every object of the collection now, as stored bytes (resourceVersion spliced
        in), shared: callers that ask at the same store revision (a burst of watches
        without a resourceVersion) get the same Snapshot, read once, and it is freed when
        the last of them lets go of it. "Now" is the store's revision asked of the store
        (`current_revision`): another API server on the same etcd may have written since
        this one last heard, and a write acknowledged anywhere before the call is in it."""
        key = _snapshot_key(resource, namespace)
        now = await self._current_revision()
        shared = self._snapshots.get(key)
        if shared is not None and shared.revision >= now:
            return shared
        while True:
            reading = self._snapshot_reads.get(key)
            if reading is None:
                reading = self._snapshot_reads[key] = asyncio.ensure_future(
                    self._read_snapshot(resource, namespace))
                reading.add_done_callback(lambda _: self._snapshot_reads.pop(key, None))
            snapshot = await asyncio.shield(reading)
            if snapshot.revision >= now:  # a read already under way may predate `now`
                return snapshot

    async def not_older_than(self, revision: int, wait: float = FRESHNESS_WAIT) -> None:
        """Return once the store has reached `revision`; after `wait` seconds without, 504
        "Too large resource version" (upstream's watch cache waits 3 s the same way). A
        resourceVersion a client holds is one the store gave: beyond the store's revision
        only after a restore from an older snapshot, and the client must then list again,
        not wait (a watch would silently skip the new history up to that number). Free for
        0 ("any") and for a revision this server has already seen: callers need no guard."""
        if revision <= self.backend.revision:
            return
        deadline = time.monotonic() + wait
        while True:
            now = await self._current_revision()
            if revision <= now:
                return
            if time.monotonic() >= deadline:
                raise errors.too_large_resource_version(revision, now)
            await asyncio.sleep(0.05)

    async def _current_revision(self) -> int:
        try:
            return await self.backend.current_revision()
        except store_errors.StoreError as exc:
            raise _status(exc, None, "") from exc

    async def _read_snapshot(self, resource: Resource, namespace: str | None) -> Snapshot:
        items: list[bytes] = []
        revision = 0
        async for revision, page in self.pages(resource, namespace):
            items.extend(page)
        snapshot = self._snapshots[_snapshot_key(resource, namespace)] = \
            Snapshot(revision, items)
        return snapshot

    def watch(self, resource: Resource, namespace: str | None,
              start_revision: int) -> ObjectWatch:
        """Events from start_revision on; raises Expired (410) if it is compacted."""
        try:
            stream = self.backend.watch(resource.prefix(namespace), start_revision=start_revision)
        except store_errors.Compacted as exc:
            raise _too_old(start_revision - 1, exc) from exc
        # opened at each event, not fixed now: a reload may start (or stop) encrypting it
        return ObjectWatch(stream, resource, start_revision, self._events,
                           None if self.encryption is None else self._opened)

    async def reencrypt(self, resource: Resource, ttl: float | None = None,
                        page_size: int = 100) -> int:
        """Every object of `resource` not yet sealed by the provider and key that now
        write, written again with them; how many were. Objects are not decoded: their
        bytes are opened and sealed again, at their current revision (compare-and-swap).
        Objects created meanwhile are sealed with the new key already."""
        if self._transformer(resource) is None:
            return 0
        prefix, after, rewritten = resource.prefix(None), None, 0
        while True:
            try:
                page = await self.backend.range(prefix, after=after, limit=page_size)
            except store_errors.StoreError as exc:
                raise _status(exc, resource, "") from exc
            # a page at once: the store commits them together (group commit)
            done = await asyncio.gather(*(self._rewrite(resource, kv, ttl)
                                          for kv in page.items))
            rewritten += sum(done)
            if not page.more:
                return rewritten
            after = page.items[-1].key

    async def _rewrite(self, resource: Resource, kv: KeyValue | None, ttl: float | None
                       ) -> bool:
        while kv is not None:
            transformer = self._transformer(resource)  # a reload may come in between
            if transformer is None:
                return False
            try:
                value, stale = transformer.from_storage(kv.value, kv.key.encode())
            except TransformError as exc:
                raise _unreadable(kv.key, str(exc), True) from None
            if not stale:
                return False
            try:
                try:
                    await self.backend.update(
                        kv.key, transformer.to_storage(value, kv.key.encode()),
                        mod_revision=kv.mod_revision, ttl=ttl)
                    return True
                except store_errors.Conflict:
                    kv = await self.backend.get(kv.key)  # written meanwhile: look again
            except store_errors.KeyNotFound:
                return False
            except store_errors.StoreError as exc:
                raise _status(exc, resource, kv.key.rpartition("/")[2]) from exc
        return False


def _snapshot_key(resource: Resource, namespace: str | None) -> str:
    """Snapshots are shared per collection and per version served."""
    prefix = resource.prefix(namespace)
    return f"{prefix}@{resource.version}" if resource.storage_version else prefix


class Snapshot:
    """A collection at one revision, as stored bytes; never modify `items`."""

    __slots__ = ("revision", "items", "__weakref__")

    def __init__(self, revision: int, items: list[bytes]):
        self.revision, self.items = revision, items


def line(event_type: str, obj: dict[str, Any]) -> bytes:
    """One event of a JSON watch stream, as upstream writes it."""
    return b'{"type":"%s","object":%s}\n' % (event_type.encode(), encoding.compact(obj))


class WatchEvent:
    """One change as watchers see it. Shared by every watcher of the same event, so it is
    decoded once and serialized once however many watch it; never mutate `object`. The
    previous value is decoded only when asked for (watchers with selectors ask)."""

    __slots__ = ("type", "object", "_previous", "_prev_kv", "_resource", "_line")

    def __init__(self, event_type: str, obj: dict[str, Any], prev_kv: KeyValue | None,
                 previous: dict[str, Any] | None = None, resource: Resource | None = None):
        self.type, self.object = event_type, obj
        self._prev_kv, self._previous = prev_kv, previous
        self._resource = resource  # the version the previous value is decoded as
        self._line: bytes | None = None

    @property
    def previous(self) -> dict[str, Any] | None:
        if self._previous is None and self._prev_kv is not None:
            self._previous = (decode(self._prev_kv) if self._resource is None
                              else decode_as(self._resource, self._prev_kv))
            self._prev_kv = None
        return self._previous

    def line(self) -> bytes:
        """The event as one line of a JSON watch stream."""
        if self._line is None:
            self._line = line(self.type, self.object)
        return self._line


def _watch_event(resource: Resource, event, opened: Opener | None) -> WatchEvent:
    kv, prev = event.kv, event.prev
    if opened is not None:  # a server with encryption: both values opened, once for all
        prev = None if prev is None else opened(resource, prev)
        kv = kv if event.type is EventType.DELETE else opened(resource, kv)
    if event.type is EventType.DELETE:
        # A deleted object's final resourceVersion is the delete's revision.
        obj = decode_as(resource, prev)
        obj["metadata"]["resourceVersion"] = str(event.revision)
        return WatchEvent("DELETED", obj, prev, resource=resource)
    if event.type is EventType.CREATE:
        return WatchEvent("ADDED", decode_as(resource, kv), None, resource=resource)
    return WatchEvent("MODIFIED", decode_as(resource, kv), prev, resource=resource)


Opener = Callable[[Resource, KeyValue], KeyValue]


class ObjectWatch:
    """Store events as `WatchEvent`s. `next()` may be cancelled (a timeout) without losing
    events. Watchers of one resource share decoded events through `cache`."""

    def __init__(self, stream, resource: Resource, start_revision: int,
                 cache: dict[tuple[str, int, str], WatchEvent], opened: Opener | None = None):
        self._stream = stream
        self._resource = resource
        self._start = start_revision
        self._cache = cache
        self._opened = opened  # encrypted resources: how values are opened

    async def next(self) -> list[WatchEvent]:
        try:
            events = await anext(self._stream)
        except store_errors.Compacted as exc:
            raise _too_old(self._start - 1, exc) from exc
        except store_errors.WatchExpired as exc:
            raise errors.Expired(str(exc)) from exc
        except store_errors.StoreError as exc:
            raise _status(exc, self._resource, "") from exc
        out = []
        for event in events:
            key = (event.kv.key, event.revision, self._resource.version)
            shared = self._cache.get(key)
            if shared is None:
                shared = self._cache[key] = _watch_event(self._resource, event, self._opened)
                while len(self._cache) > EVENT_CACHE_SIZE:
                    del self._cache[next(iter(self._cache))]  # oldest first (insertion order)
            out.append(shared)
        return out

    def progress(self, store_revision: int) -> int:
        """The revision through which every event has been delivered, for a bookmark: the
        backend watch's own count where it keeps one (etcd, whose events reach this server
        after its own writes' answers), else the store's revision (the local backends fan
        out a write to their watches before they acknowledge it)."""
        return getattr(self._stream, "progress", store_revision)

    def close(self) -> None:
        self._stream.close()


EVENT_CACHE_SIZE = 512  # recent events; a watcher further behind decodes its own


def _with_version(obj: dict[str, Any], revision: int) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(revision)}}


def _written(resource: Resource, obj: dict[str, Any], kv: KeyValue, data: bytes
             ) -> dict[str, Any]:
    """What a write answers: the object written, with its new resourceVersion; for a
    converted kind, what was stored (`data`, before any encryption) converted back (as
    upstream answers: the stored object decoded, so a field only the storage version holds
    shows its default)."""
    if resource.converts:
        return decode_as(resource, KeyValue(kv.key, data, kv.create_revision, kv.mod_revision))
    return _with_version(obj, kv.mod_revision)


def _unreadable(key: str, reason: str, listing: bool) -> errors.InternalError:
    """upstream's storage.NewInternalError for a value its transformers cannot read (a list
    names the key)."""
    message = f"unable to transform key {json.dumps(key)}: {reason}" if listing else reason
    return errors.InternalError(f"Internal error occurred: {message}",
                                causes=[{"message": message}])


def _too_old(revision: int, exc: store_errors.Compacted) -> errors.Expired:
    return errors.Expired(
        f"too old resource version: {revision} ({exc.compact_revision})"
    )


def _status(exc: store_errors.StoreError, resource: Resource, name: str) -> errors.StatusError:
    """The Status error a store error stands for."""
    if isinstance(exc, store_errors.KeyExists):
        return errors.already_exists(resource.plural, name, resource.group)
    if isinstance(exc, store_errors.KeyNotFound):
        return errors.not_found(resource.plural, name, resource.group)
    if isinstance(exc, store_errors.Conflict):
        return errors.conflict(resource.plural, name, resource.group, lost_race=True)
    if isinstance(exc, store_errors.Compacted):
        return errors.Expired(f"too old resource version: {exc.requested} "
                              f"({exc.compact_revision})")
    if isinstance(exc, store_errors.FutureRevision):
        return errors.too_large_resource_version(exc.requested, exc.current)
    return errors.ServiceUnavailable(f"storage unavailable: {exc}")
