"""The etcd backend (`--datastore-endpoint https://h1:2379,https://h2:2379`): the store contract
over a real etcd cluster, the way kube-apiserver's etcd3 storage uses it.

Keys are the contract's keys unchanged (`/registry/<group>/<resource>/<ns>/<name>`), so
`etcdctl get --prefix /registry` shows the cluster's objects; revisions are etcd's: a key's
`mod_revision` is the object's resourceVersion. etcd does everything `LogBackend` does for the
other backends (revisions, history, watch fan-out, durability), so this module only translates:

- create: `Txn(If create_revision(key) == 0, Then Put)`; update and guarded delete:
  `Txn(If mod_revision(key) == seen, Then Put/DeleteRange, Else Range(key))`, the Else branch
  telling `KeyNotFound` from `Conflict` (with the revision found) in the same round trip;
  an unconditional delete is a `DeleteRange` with the previous value.
- a create or update whose answer was lost (the member died, a deadline passed while the
  cluster elected a leader) is sent once more, to the next endpoint; if that finds the key
  already holding exactly the value written, the first attempt was applied and its result is
  returned (a concurrent writer of identical bytes from the same base leaves the same state).
  A guarded delete is sent once more too; if that finds the key gone or changed, the key's
  first change after the revision it was guarded by (read from etcd's history) tells whether
  the first attempt deleted it; only with that history compacted is the outcome `Unavailable`.
- reads: linearizable `Range`s at a revision (0: the newest); etcd answers "compacted" or
  "future revision", which become `Compacted`/`FutureRevision`.
- watches: one gRPC Watch stream each, with previous values, from `start_revision` (0: the
  revision after the newest this client has seen, so a write issued after `watch()` returns is
  always delivered). When the stream breaks (the member died, lost its leader), the watch
  re-opens on the next endpoint from the revision after the last event it delivered: no gap,
  no duplicate. A start below etcd's compaction point ends the watch with `Compacted`.
- TTLs are leases, shared between keys of (nearly) the same expiry as kube-apiserver's lease
  manager does; etcd deletes the keys when the lease expires, and watchers see the deletes.
- compaction is kube-apiserver's: every `compact_interval` seconds (default 5 minutes) a
  compare-and-swap on the key `compact_rev_key` elects one of the API servers sharing the
  cluster, which compacts to the revision the previous round recorded (or, with `retain`,
  to `retain` revisions behind the newest).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from k8py.server.store import etcd_pb2 as pb
from k8py.server.store.backend import (
    Compacted,
    Conflict,
    EventType,
    FutureRevision,
    KeyExists,
    KeyNotFound,
    KeyValue,
    RangeResult,
    Stats,
    Unavailable,
)
from k8py.server.store.etcdclient import EtcdClient, Endpoint, OutcomeUnknown, RevisionError
from k8py.server.store.etcdwatch import EtcdWatch, range_end

log = logging.getLogger(__name__)

COMPACT_KEY = b"compact_rev_key"  # kube-apiserver's, so mixed control planes agree
DEFAULT_COMPACT_INTERVAL = 300.0  # kube-apiserver's --etcd-compaction-interval
CHANGE_TIMEOUT = 5.0  # seconds to read back a change that history already holds


class EtcdBackend:
    def __init__(self, endpoints: list[Endpoint], *, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None, retain: int = 0,
                 compact_interval: float = DEFAULT_COMPACT_INTERVAL,
                 max_watch_buffer: int = 100_000):
        self.client = EtcdClient(endpoints, cafile=cafile, certfile=certfile, keyfile=keyfile)
        self.retain = retain
        self.compact_interval = compact_interval
        self._max_watch_buffer = max_watch_buffer
        self._compact_revision = 0
        self._leases = _Leases(self.client)
        self._watches: set[EtcdWatch] = set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._compactor: asyncio.Task | None = None
        self._closed = True

    @property
    def revision(self) -> int:
        return self.client.revision

    @property
    def compact_revision(self) -> int:
        return self._compact_revision

    async def current_revision(self) -> int:
        # a linearizable read of one small key: etcd's header carries its newest revision
        # (kube-apiserver asks the same way before a consistent read from its cache)
        await self._range(pb.RangeRequest(key=COMPACT_KEY, keys_only=True, limit=1))
        return self.revision

    async def start(self) -> None:
        await self.client.call("Maintenance", "Status", pb.StatusRequest(), write=False)
        self._closed = False
        self._compactor = asyncio.create_task(self._compaction_loop(), name="etcd-compaction")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._idle.wait()  # writes already issued finish first
        if self._compactor is not None:
            self._compactor.cancel()
            await asyncio.gather(self._compactor, return_exceptions=True)
        for watch in list(self._watches):
            watch.fail(Unavailable("store closed"))
        self.client.close()

    async def _call(self, service: str, method: str, request, *, write: bool):
        if self._closed:
            raise Unavailable("store is closed")
        self._inflight += 1
        self._idle.clear()
        try:
            return await self.client.call(service, method, request, write=write)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    async def _resend(self, send):
        """Send a compare-and-swap again for as long as its outcome stays unknown (a member
        died under it; the cluster is still electing) within the client's retry window. Each
        resend is safe: its compare fails if an earlier attempt was applied, and the caller
        settles that from the value found."""
        deadline = time.monotonic() + self.client.retry_for
        delay = 0.1
        while True:
            try:
                return await send()
            except OutcomeUnknown:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _revision_error(self, exc: RevisionError, requested: int) -> Exception:
        if exc.compacted:
            return Compacted(requested, max(self._compact_revision, 0))
        return FutureRevision(requested, self.revision)

    # --- writes -----------------------------------------------------------------------------

    async def create(self, key: str, value: bytes, *, ttl: float | None = None) -> KeyValue:
        k = _key(key, value)
        compare = pb.Compare(key=k, target=pb.Compare.CREATE, result=pb.Compare.EQUAL,
                             create_revision=0)
        put = pb.PutRequest(key=k, value=value, lease=await self._leases.lease(ttl))
        txn = pb.TxnRequest(compare=[compare], success=[pb.RequestOp(request_put=put)],
                            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k))])
        try:
            response = await self._call("KV", "Txn", txn, write=True)
        except OutcomeUnknown:
            response = await self._resend(lambda: self._call("KV", "Txn", txn, write=True))
            if not response.succeeded:
                found = response.responses[0].response_range.kvs
                if found and found[0].value == value and found[0].version == 1:
                    return _kv(found[0])  # the first attempt was applied
        if not response.succeeded:
            raise KeyExists(key)
        revision = response.header.revision
        return KeyValue(key, value, revision, revision)

    async def update(self, key: str, value: bytes, *, mod_revision: int,
                     ttl: float | None = None) -> KeyValue:
        if mod_revision <= 0:
            raise ValueError("update needs the mod_revision the caller last saw")
        k = _key(key, value)
        put = pb.PutRequest(key=k, value=value, lease=await self._leases.lease(ttl),
                            prev_kv=True)
        op = pb.RequestOp(request_put=put)
        try:
            response = await self._guarded(key, mod_revision, op)
        except OutcomeUnknown:
            try:
                response = await self._resend(lambda: self._guarded(key, mod_revision, op))
            except Conflict:
                now = await self.get(key)
                if now is not None and now.value == value and now.mod_revision > mod_revision:
                    return now  # the first attempt was applied
                raise
        prev = response.responses[0].response_put.prev_kv
        return KeyValue(key, value, prev.create_revision, response.header.revision)

    async def delete(self, key: str, *, mod_revision: int = 0) -> KeyValue:
        k = _key(key, b"")
        request = pb.DeleteRangeRequest(key=k, prev_kv=True)
        if mod_revision:
            op = pb.RequestOp(request_delete_range=request)
            try:
                response = await self._guarded(key, mod_revision, op)
            except OutcomeUnknown:
                try:
                    response = await self._guarded(key, mod_revision, op)
                except (KeyNotFound, Conflict):
                    return await self._deleted_after(key, mod_revision)
            deleted = response.responses[0].response_delete_range
        else:
            deleted = await self._call("KV", "DeleteRange", request, write=True)
        if not deleted.prev_kvs:
            raise KeyNotFound(key)
        return _kv(deleted.prev_kvs[0])

    async def _deleted_after(self, key: str, mod_revision: int) -> KeyValue:
        """After a guarded delete whose answer was lost, and whose second attempt found the
        key gone or changed: the key's first change after `mod_revision`, from etcd's history,
        says which. A delete was ours (had another deleter of that version won, our first
        attempt could only have failed, and a client retrying cannot tell the two apart);
        a put means we lost: `Conflict`. History already compacted leaves it `Unavailable`."""
        watch = self.watch(key, start_revision=mod_revision + 1)
        try:
            async with asyncio.timeout(CHANGE_TIMEOUT):
                async for events in watch:
                    for event in events:
                        if event.kv.key != key:
                            continue  # the watch is on a prefix: a longer name
                        if event.type is EventType.DELETE and event.prev is not None:
                            return event.prev
                        raise Conflict(key, mod_revision, event.revision)
        except (Compacted, TimeoutError):
            pass
        finally:
            watch.close()
        raise Unavailable(f"delete of {key}: the answer was lost; outcome unknown")

    async def _guarded(self, key: str, mod_revision: int, op: pb.RequestOp) -> pb.TxnResponse:
        """op if the key is still at mod_revision; KeyNotFound or Conflict if not."""
        k = key.encode()
        compare = pb.Compare(key=k, target=pb.Compare.MOD, result=pb.Compare.EQUAL,
                             mod_revision=mod_revision)
        txn = pb.TxnRequest(compare=[compare], success=[op],
                            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=k))])
        response = await self._call("KV", "Txn", txn, write=True)
        if response.succeeded:
            return response
        found = response.responses[0].response_range.kvs
        if not found:
            raise KeyNotFound(key)
        raise Conflict(key, mod_revision, found[0].mod_revision)

    # --- reads ------------------------------------------------------------------------------

    async def _range(self, request: pb.RangeRequest) -> pb.RangeResponse:
        if request.revision < 0:
            raise ValueError("negative revision")
        try:
            return await self._call("KV", "Range", request, write=False)
        except RevisionError as exc:
            raise self._revision_error(exc, request.revision) from None

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        response = await self._range(pb.RangeRequest(key=key.encode(), revision=revision))
        return _kv(response.kvs[0]) if response.kvs else None

    async def range(self, prefix: str, *, after: str | None = None, limit: int = 0,
                    revision: int = 0) -> RangeResult:
        start = (after.encode() + b"\0") if after else prefix.encode()
        response = await self._range(pb.RangeRequest(
            key=start, range_end=range_end(prefix.encode()), limit=max(limit, 0),
            revision=revision))
        return RangeResult(revision or response.header.revision,
                           [_kv(kv) for kv in response.kvs], response.more)

    async def count(self, prefix: str, *, revision: int = 0) -> tuple[int, int]:
        response = await self._range(pb.RangeRequest(
            key=prefix.encode(), range_end=range_end(prefix.encode()), revision=revision,
            count_only=True))
        return revision or response.header.revision, response.count

    def watch(self, prefix: str, *, start_revision: int = 0) -> EtcdWatch:
        if self._closed:
            raise Unavailable("store is closed")
        start = start_revision or self.revision + 1
        if start <= self._compact_revision:
            raise Compacted(start, self._compact_revision)
        watch = EtcdWatch(self.client, prefix, start, self._max_watch_buffer,
                          on_compacted=self._saw_compaction, on_end=self._watches.discard)
        self._watches.add(watch)
        return watch

    def _saw_compaction(self, revision: int) -> None:
        self._compact_revision = max(self._compact_revision, revision)

    async def stats(self) -> Stats:
        status = await self._call("Maintenance", "Status", pb.StatusRequest(), write=False)
        keys = await self._range(pb.RangeRequest(key=b"\0", range_end=b"\0", count_only=True))
        return Stats(self.revision, self._compact_revision, keys.count, status.dbSize, 0)

    # --- compaction -------------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        # etcd, not this client's view, says whether the revision is in the future: another
        # server may have written past what this one has seen
        if revision <= self._compact_revision:
            return
        try:
            await self._call("KV", "Compact", pb.CompactionRequest(revision=revision),
                             write=True)
        except RevisionError as exc:
            if not exc.compacted:
                raise FutureRevision(revision, self.revision) from None
            # someone compacted further already: fine
        self._compact_revision = max(self._compact_revision, revision)

    async def _compaction_loop(self) -> None:
        version, recorded = 0, 0  # the compact key's version we expect; last round's revision
        while True:
            await asyncio.sleep(self.compact_interval)
            try:
                version, recorded = await self._compact_round(version, recorded)
            except Exception as exc:  # the next round retries
                log.warning("etcd compaction failed, will retry: %s", exc)

    async def _compact_round(self, version: int, recorded: int) -> tuple[int, int]:
        """One round: claim it with a compare-and-swap on the compact key's version, as
        kube-apiserver's compactor does, so that of several servers only one compacts."""
        claim = pb.Compare(key=COMPACT_KEY, target=pb.Compare.VERSION,
                           result=pb.Compare.EQUAL, version=version)
        txn = pb.TxnRequest(
            compare=[claim],
            success=[pb.RequestOp(request_put=pb.PutRequest(
                key=COMPACT_KEY, value=str(self.revision).encode()))],
            failure=[pb.RequestOp(request_range=pb.RangeRequest(key=COMPACT_KEY))])
        response = await self._call("KV", "Txn", txn, write=True)
        now = response.header.revision
        if not response.succeeded:
            kvs = response.responses[0].response_range.kvs
            return (kvs[0].version if kvs else 0), now
        target = now - self.retain if self.retain else recorded
        if target > self._compact_revision:
            await self.compact(target)
            log.debug("etcd compacted to revision %d", target)
        return version + 1, now


class _Leases:
    """Leases for TTL keys: one lease serves every key whose TTL ends within a small window
    of its expiry (5% of the TTL, at most a minute), as kube-apiserver's lease manager."""

    def __init__(self, client: EtcdClient):
        self._client = client
        self._by_ttl: dict[int, tuple[int, float]] = {}  # ttl seconds -> (lease id, expires)
        self._lock = asyncio.Lock()

    async def lease(self, ttl: float | None) -> int:
        if not ttl:
            return 0
        seconds = max(1, math.ceil(ttl))
        async with self._lock:
            now = time.monotonic()
            cached = self._by_ttl.get(seconds)
            if cached is not None and cached[1] - now >= seconds:
                return cached[0]
            window = min(60, max(1, seconds // 20))
            granted = await self._client.call(
                "Lease", "LeaseGrant", pb.LeaseGrantRequest(TTL=seconds + window), write=True)
            self._by_ttl[seconds] = (granted.ID, now + granted.TTL)
            return granted.ID


def _key(key: str, value: bytes) -> bytes:
    if not key:
        raise ValueError("empty key")
    if not isinstance(value, bytes):
        raise TypeError("value must be bytes")
    return key.encode()


def _kv(kv: pb.KeyValue) -> KeyValue:
    return KeyValue(kv.key.decode(), kv.value, kv.create_revision, kv.mod_revision)

