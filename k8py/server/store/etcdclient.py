"""A client of etcd's v3 gRPC API over grpclib, across several endpoints of one cluster.

Endpoints are k3s's `--datastore-endpoint` form: `https://h1:2379,https://h2:2379` (or `http://`),
with an optional CA, client certificate and key for TLS. The client talks to one endpoint at a
time and moves to the next one when the current one is unusable, the way etcd's own client
balances (clientv3 retries on another endpoint only when that cannot repeat a write):

- A **read** (Range, Status, MemberList) is retried on the next endpoint after any transport
  failure, deadline, `Unavailable` answer ("no leader", "leader changed", ...) or etcd's own
  "context deadline exceeded" (a linearizable read held through an election), with a short
  back-off, until `retry_for` seconds have passed.
- A **write** is retried only when it certainly was not applied: the connection could not be
  opened, or etcd refused it before proposing it ("no leader", "not capable", "too many
  requests"). A write whose outcome is unknown (the connection dropped after it was sent, a
  deadline) raises `OutcomeUnknown` (an `Unavailable`); the backend settles it (etcd.py).

Membership (`member_list`, `member_add`, `member_promote`, `member_remove`) wraps etcd's
Cluster service for the embedded etcd (`k8py.server.embeddedetcd`): adding a member is a
write; promoting a learner that has not caught up fails with `NotInSync`, which the caller
retries.

A snapshot (`snapshot`) is a read: Maintenance.Snapshot streams the member's whole database
followed by its sha256; a broken stream starts over on the next endpoint, into the same sink.

Every failure leaves as a store error (`backend.py`): compacted and future revisions as
`Compacted`/`FutureRevision`, everything else as `Unavailable`, so the API server maps each one
to a Status. Every response header's revision raises `revision`, the newest revision seen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import BinaryIO, TypeVar

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from k8py.server.store import etcd_grpc
from k8py.server.store import etcd_pb2 as pb
from k8py.server.store.backend import StoreError, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

CALL_TIMEOUT = 5.0  # seconds for one call on one endpoint
RETRY_FOR = 15.0  # seconds a call keeps trying other endpoints (an election takes ~1-2 s)

# etcd refuses these before proposing: a write that got one was not applied.
NOT_APPLIED = ("etcdserver: no leader", "etcdserver: not capable", "etcdserver: too many requests",
               "etcdserver: unhealthy cluster")  # a member change refused before proposing
TRANSIENT = (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED)
REQUIRE_LEADER = {"hasleader": "true"}  # etcd's rpctypes.MetadataRequireLeaderKey
COMPACTED = "required revision has been compacted"
FUTURE = "required revision is a future revision"


class OutcomeUnknown(Unavailable):
    """A write was sent but its answer was lost: it may or may not have been applied."""


class RevisionError(StoreError):
    """etcd answered that a revision is compacted (`compacted` True) or in the future; the
    backend turns it into `Compacted`/`FutureRevision` with the numbers it knows."""

    def __init__(self, message: str, compacted: bool):
        super().__init__(message)
        self.compacted = compacted


class NotInSync(Unavailable):
    """MemberPromote refused: the learner has not caught up with the leader yet."""


class MemberNotFound(StoreError):
    """No member with that ID (already removed)."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


def parse_endpoints(spec: str) -> list[Endpoint]:
    """`https://h1:2379,https://h2:2379` -> endpoints; ValueError on a malformed one."""
    endpoints = []
    for part in spec.split(","):
        url = urllib.parse.urlsplit(part.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"bad etcd endpoint {part!r}: use https://host:port")
        if url.path not in ("", "/") or url.query:
            raise ValueError(f"bad etcd endpoint {part!r}: no path or query after host:port")
        endpoints.append(Endpoint(url.hostname, url.port or 2379, url.scheme == "https"))
    return endpoints


def tls_context(cafile: str | None, certfile: str | None, keyfile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        context.load_cert_chain(certfile, keyfile or None)
    context.set_alpn_protocols(["h2"])
    return context


class EtcdClient:
    def __init__(self, endpoints: list[Endpoint], *, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 retry_for: float = RETRY_FOR):
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = endpoints
        self.retry_for = retry_for
        self._ssl = (tls_context(cafile, certfile, keyfile)
                     if any(e.tls for e in endpoints) else None)
        self._current = 0
        self._channels: dict[int, Channel] = {}
        self.revision = 0  # the newest revision any response carried

    # --- channels ---------------------------------------------------------------------------

    def _channel(self, index: int) -> Channel:
        channel = self._channels.get(index)
        if channel is None:
            endpoint = self.endpoints[index]
            channel = Channel(endpoint.host, endpoint.port,
                              ssl=self._ssl if endpoint.tls else None)
            self._channels[index] = channel
        return channel

    def _drop(self, index: int) -> None:
        """Forget a failed endpoint's connection and move on to the next endpoint."""
        channel = self._channels.pop(index, None)
        if channel is not None:
            channel.close()
        if self._current == index:
            self._current = (index + 1) % len(self.endpoints)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def seen(self, header) -> None:
        if header is not None and header.revision > self.revision:
            self.revision = header.revision

    async def connected(self) -> tuple[int, Channel]:
        """An open connection to the current endpoint, trying each endpoint once; raises
        OSError if none answers."""
        error: BaseException | None = None
        for _ in range(len(self.endpoints)):
            index = self._current
            channel = self._channel(index)
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    await channel.__connect__()
                return index, channel
            except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                log.debug("etcd endpoint %s unusable: %s", self.endpoints[index], exc)
                error = exc
                self._drop(index)
        raise OSError(f"no etcd endpoint answers ({error})")

    # --- calls ------------------------------------------------------------------------------

    async def call(self, service: str, method: str, request, *, write: bool):
        """One unary call (e.g. ("KV", "Txn")) with the retry rules of the module docstring."""

        async def once(channel: Channel):
            stub = getattr(etcd_grpc, f"{service}Stub")(channel)
            # hasleader: a member without a leader refuses at once ("no leader": not applied,
            # so safe to retry elsewhere) instead of holding the request until it times out
            return await getattr(stub, method)(request, timeout=CALL_TIMEOUT,
                                               metadata=REQUIRE_LEADER)

        response = await self.retrying(once, write=write, what=f"{service}.{method}")
        self.seen(getattr(response, "header", None))
        return response

    async def retrying(self, attempt: Callable[[Channel], Awaitable[T]], *, write: bool,
                       what: str) -> T:
        deadline = time.monotonic() + self.retry_for
        delay = 0.05
        while True:
            try:
                index, channel = await self.connected()
            except OSError as exc:
                error: BaseException = exc  # nothing was sent: safe to retry a write too
            else:
                try:
                    return await attempt(channel)
                except GRPCError as exc:
                    message = exc.message or ""
                    if COMPACTED in message or FUTURE in message:
                        raise RevisionError(message, COMPACTED in message) from None
                    # DEADLINE_EXCEEDED: the member held the call past our deadline (a
                    # linearizable read waiting out an election): as transient as UNAVAILABLE
                    if exc.status not in TRANSIENT and not (
                            exc.status is Status.RESOURCE_EXHAUSTED and "too many" in message):
                        raise Unavailable(f"etcd {what}: {message or exc.status.name}") from None
                    if write and not message.startswith(NOT_APPLIED):
                        self._drop(index)
                        raise OutcomeUnknown(f"etcd {what}: {message}; outcome unknown") from None
                    error = exc
                    self._drop(index)
                except (StreamTerminatedError, OSError, asyncio.TimeoutError) as exc:
                    self._drop(index)
                    if write:
                        raise OutcomeUnknown(f"etcd {what}: {exc or type(exc).__name__}; "
                                             "outcome unknown") from None
                    error = exc
            if time.monotonic() + delay > deadline:
                raise Unavailable(f"etcd {what}: {error}") from None
            log.info("etcd %s failed (%s), trying %s", what, error or type(error).__name__,
                     self.endpoints[self._current])
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def status(self):
        """The current endpoint's Maintenance.Status (its member ID, leader, revision)."""
        return await self.call("Maintenance", "Status", pb.StatusRequest(), write=False)

    # --- membership (etcd's Cluster service) ------------------------------------------------

    async def member_list(self) -> list:
        """The members (`pb.Member`: ID, name, peerURLs, clientURLs, isLearner), as the
        leader sees them (linearizable)."""
        response = await self.call("Cluster", "MemberList",
                                   pb.MemberListRequest(linearizable=True), write=False)
        return list(response.members)

    async def member_add(self, peer_urls: list[str], *, learner: bool = True):
        """Add a member (a non-voting learner by default); (the new member, all members)."""
        response = await self.call("Cluster", "MemberAdd",
                                   pb.MemberAddRequest(peerURLs=peer_urls, isLearner=learner),
                                   write=True)
        return response.member, list(response.members)

    async def member_promote(self, member_id: int) -> list:
        """Make a learner a voting member; `NotInSync` until it has caught up."""
        try:
            response = await self.call("Cluster", "MemberPromote",
                                       pb.MemberPromoteRequest(ID=member_id), write=True)
        except Unavailable as exc:
            if "not in sync" in str(exc) or "in sync with leader" in str(exc):
                raise NotInSync(str(exc)) from None
            if "member not found" in str(exc):
                raise MemberNotFound(str(exc)) from None
            raise
        return list(response.members)

    async def member_remove(self, member_id: int) -> list:
        """Remove a member; `MemberNotFound` if it is gone already."""
        try:
            response = await self.call("Cluster", "MemberRemove",
                                       pb.MemberRemoveRequest(ID=member_id), write=True)
        except Unavailable as exc:
            if "member not found" in str(exc):
                raise MemberNotFound(str(exc)) from None
            raise
        return list(response.members)

    async def snapshot(self, sink: BinaryIO) -> int:
        """Stream one member's database into `sink` (rewound on a retry), as etcdctl
        `snapshot save` does: the bolt file followed by its 32-byte sha256. Returns the
        cluster's revision just before the snapshot began: the snapshot holds at least it
        (etcd 3.4 puts no revision in the stream's header)."""
        status = await self.call("KV", "Range", pb.RangeRequest(key=b"\0", count_only=True),
                                 write=False)
        revision = status.header.revision

        async def once(channel: Channel) -> None:
            await asyncio.to_thread(_rewind, sink)
            stub = etcd_grpc.MaintenanceStub(channel)
            pending: list[bytes] = []
            size = 0
            async with stub.Snapshot.open(metadata=REQUIRE_LEADER) as stream:
                await stream.send_message(pb.SnapshotRequest(), end=True)
                async for response in stream:
                    pending.append(response.blob)
                    size += len(response.blob)
                    if size >= 1 << 20:  # file writes off the event loop, a MiB at a time
                        await asyncio.to_thread(sink.write, b"".join(pending))
                        pending, size = [], 0
            await asyncio.to_thread(sink.write, b"".join(pending))

        await self.retrying(once, write=False, what="Maintenance.Snapshot")
        return revision


def _rewind(sink: BinaryIO) -> None:
    sink.seek(0)
    sink.truncate()
