"""Informers: a read-only cache of one resource kept current by list, then watch.

`Informer.run` lists, replaces the cache (telling handlers what was added, changed or
removed since the last list), then watches from the list's resourceVersion. When a watch
ends (server timeout) it watches again from the last version seen. When it breaks (its
server stopped or was marked failed: `ServiceUnavailable`; or 429, 500) it also watches again
from the last version seen, with backoff, on whichever server the transport goes to next
(several API servers share one store, so one resourceVersion means the same everywhere): as
client-go's reflector, it lists again only when the version is too old (410 `Expired`) or
the watch is refused otherwise (403, 404, 504 "Too large resource version" after a restore
from an older snapshot, ...). A failed list is retried with backoff.
`synced` is set after the first list.

Handlers are plain functions called inline for every change; they should only enqueue keys.
The cache hands out the objects it holds, which are shared: copy before changing one.

Indexes: by namespace always; others by name, from a function of the object to index values
(`BY_NODE` for pods, `by_label(key)`). `SharedInformers` keeps one informer per resource, so
controllers watching the same resource share one watch and one cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from k8py.api import errors
from k8py.api.resources import Resource
from k8py.client.client import Client

log = logging.getLogger(__name__)

Indexer = Callable[[dict[str, Any]], Iterable[str]]
AddHandler = Callable[[dict[str, Any]], None]
UpdateHandler = Callable[[dict[str, Any], dict[str, Any]], None]

WATCH_TIMEOUT = 300  # seconds; re-watched from the last version seen
RETRY_MIN, RETRY_MAX = 0.2, 30.0  # seconds of backoff
# a watch broken by these is made again from its last version (client-go's reflector)
RESUMABLE = (errors.ServiceUnavailable, errors.TooManyRequests, errors.InternalError)


def key_of(obj: dict[str, Any]) -> str:
    """`namespace/name`, or `name` for cluster-scoped objects (client-go's key format)."""
    metadata = obj["metadata"]
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata['name']}" if namespace else metadata["name"]


def split_key(key: str) -> tuple[str | None, str]:
    namespace, _, name = key.rpartition("/")
    return namespace or None, name


def BY_NODE(obj: dict[str, Any]) -> Iterable[str]:  # noqa: N802 (reads as a constant)
    node = (obj.get("spec") or {}).get("nodeName")
    return (node,) if node else ()


def by_label(label: str) -> Indexer:
    def index(obj: dict[str, Any]) -> Iterable[str]:
        value = (obj["metadata"].get("labels") or {}).get(label)
        return (value,) if value is not None else ()
    return index


def by_owner_uid(obj: dict[str, Any]) -> Iterable[str]:
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or ()]


class Informer:
    def __init__(self, client: Client, resource: Resource, namespace: str | None = None, *,
                 label_selector: str = "", field_selector: str = "",
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.client = client
        # what the cache keeps of each object (client-go's SetTransform): less of it
        self.transform = transform
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.synced = asyncio.Event()
        self.resource_version = "0"
        self._items: dict[str, dict[str, Any]] = {}
        self._indexers: dict[str, Indexer] = {"namespace": _namespace_index}
        self._indexes: dict[str, dict[str, dict[str, dict[str, Any]]]] = {"namespace": {}}
        self._on_add: list[AddHandler] = []
        self._on_update: list[UpdateHandler] = []
        self._on_delete: list[AddHandler] = []

    # --- reading ----------------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        return self._items.get(key)

    def get_by_name(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._items.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            return list(self._items.values())
        return self.by_index("namespace", namespace)

    def by_index(self, index: str, value: str) -> list[dict[str, Any]]:
        return list(self._indexes[index].get(value, {}).values())

    def keys(self) -> list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    # --- configuring ------------------------------------------------------------------------

    def add_index(self, name: str, indexer: Indexer) -> None:
        if name in self._indexers:
            return
        self._indexers[name] = indexer
        index: dict[str, dict[str, dict[str, Any]]] = {}
        for key, obj in self._items.items():
            for value in indexer(obj):
                index.setdefault(value, {})[key] = obj
        self._indexes[name] = index

    def add_handlers(self, on_add: AddHandler | None = None,
                     on_update: UpdateHandler | None = None,
                     on_delete: AddHandler | None = None) -> None:
        """Handlers for changes; those added after the first list are told of what is
        already cached, as ADDs."""
        if on_add:
            self._on_add.append(on_add)
            for obj in self._items.values():
                on_add(obj)
        if on_update:
            self._on_update.append(on_update)
        if on_delete:
            self._on_delete.append(on_delete)

    # --- keeping current --------------------------------------------------------------------

    def _store(self, key: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name, indexer in self._indexers.items():
            index = self._indexes[name]
            for value in indexer(obj):
                index.setdefault(value, {})[key] = obj
        return old

    def _unindex(self, key: str, obj: dict[str, Any]) -> None:
        for name, indexer in self._indexers.items():
            index = self._indexes[name]
            for value in indexer(obj):
                bucket = index.get(value)
                if bucket is not None:
                    bucket.pop(key, None)
                    if not bucket:
                        del index[value]

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        if self.transform is not None:
            obj = self.transform(obj)
        key = key_of(obj)
        if kind == "DELETED":
            old = self._items.pop(key, None)
            if old is not None:
                self._unindex(key, old)
            for handler in self._on_delete:
                handler(obj)
            return
        old = self._store(key, obj)
        if old is None:
            for handler in self._on_add:
                handler(obj)
        else:
            for handler in self._on_update:
                handler(old, obj)

    async def _relist(self) -> None:
        body = await self.client.list(self.resource, self.namespace,
                                      label_selector=self.label_selector,
                                      field_selector=self.field_selector)
        fresh = {key_of(item): item for item in body["items"]}
        for key in [k for k in self._items if k not in fresh]:
            self._apply("DELETED", self._items[key])
        for key, item in fresh.items():
            old = self._items.get(key)
            if old is None or old["metadata"].get("resourceVersion") != \
                    item["metadata"].get("resourceVersion"):
                self._apply("MODIFIED" if old else "ADDED", item)
        self.resource_version = body["metadata"]["resourceVersion"]

    async def _watch(self) -> None:
        async for batch in self.client.watch(
            self.resource, self.namespace, resource_version=self.resource_version,
            label_selector=self.label_selector, field_selector=self.field_selector,
            timeout_seconds=WATCH_TIMEOUT,
        ):
            for kind, obj in batch:
                self._apply(kind, obj)
                self.resource_version = obj["metadata"]["resourceVersion"]

    async def run(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                await self._relist()
            except errors.StatusError as exc:
                log.warning("%s informer: %s; listing again in %.1f s", self.resource.plural,
                            exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            self.synced.set()
            delay = await self._keep_watching()

    async def _keep_watching(self) -> float:
        """Watch from the last version seen until a list is needed; the delay before it."""
        delay = RETRY_MIN
        while True:
            seen, began = self.resource_version, asyncio.get_running_loop().time()
            try:
                await self._watch()
                if self.resource_version == seen and \
                        asyncio.get_running_loop().time() - began < 1.0:
                    # ended at once with nothing (client-go's "very short watch"): not a
                    # loop of requests
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX)
                else:
                    delay = RETRY_MIN
            except errors.Expired:
                log.debug("%s: resourceVersion too old, listing again", self.resource.plural)
                return RETRY_MIN
            except RESUMABLE as exc:
                if self.resource_version != seen:
                    delay = RETRY_MIN  # it went on a while: a new break, not the same one
                log.info("%s informer: watch from %s broken (%s); watching again in %.1f s",
                         self.resource.plural, self.resource_version, exc.message, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            except errors.StatusError as exc:
                log.warning("%s informer: watch refused: %s; listing again in %.1f s",
                            self.resource.plural, exc.message, delay)
                await asyncio.sleep(delay)
                return min(delay * 2, RETRY_MAX)


def _namespace_index(obj: dict[str, Any]) -> Iterable[str]:
    namespace = obj["metadata"].get("namespace")
    return (namespace,) if namespace else ()


class SharedInformers:
    """One informer per (resource, namespace, selectors), started together."""

    def __init__(self, client: Client):
        self.client = client
        self._informers: dict[tuple, Informer] = {}
        self._tasks: list[asyncio.Task] = []
        self._started = False

    def informer(self, resource: Resource, namespace: str | None = None, *,
                 label_selector: str = "", field_selector: str = "") -> Informer:
        key = (resource, namespace, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = self._informers[key] = Informer(
                self.client, resource, namespace, label_selector=label_selector,
                field_selector=field_selector)
            if self._started:  # start late comers at once
                self._tasks.append(asyncio.create_task(informer.run()))
        return informer

    def start(self) -> None:
        self._started = True
        for informer in self._informers.values():
            self._tasks.append(asyncio.create_task(informer.run()))

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self._informers.values()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
