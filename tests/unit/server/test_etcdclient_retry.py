"""The etcd client's retry rules against a gRPC server on loopback that answers as a member
does while its cluster elects a leader: etcd holds a linearizable read until the caller's
deadline and answers DEADLINE_EXCEEDED ("context deadline exceeded"). A read is retried
(seen in CI: a read right after a killed leader's member failed a kubectl create); a write
that got it may have been applied, so it is `OutcomeUnknown` for the backend to settle."""

from __future__ import annotations

import socket

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from k8py.server.store import etcd_grpc
from k8py.server.store import etcd_pb2 as pb
from k8py.server.store.etcdclient import EtcdClient, OutcomeUnknown, parse_endpoints


class ElectingKV(etcd_grpc.KVBase):
    """Answers its first `stalls` calls as a member without a leader would, then serves."""

    def __init__(self, stalls: int):
        self.stalls = stalls
        self.calls = 0

    async def _answer(self, stream, response):
        await stream.recv_message()
        self.calls += 1
        if self.calls <= self.stalls:
            raise GRPCError(Status.DEADLINE_EXCEEDED, "context deadline exceeded")
        await stream.send_message(response)

    async def Range(self, stream):
        await self._answer(stream, pb.RangeResponse(header=pb.ResponseHeader(revision=7)))

    async def Txn(self, stream):
        await self._answer(stream, pb.TxnResponse(header=pb.ResponseHeader(revision=8)))

    async def Put(self, stream):
        raise GRPCError(Status.UNIMPLEMENTED)

    async def DeleteRange(self, stream):
        raise GRPCError(Status.UNIMPLEMENTED)

    async def Compact(self, stream):
        raise GRPCError(Status.UNIMPLEMENTED)


@pytest.fixture
async def member():
    kv = ElectingKV(stalls=2)
    server = Server([kv])
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await server.start("127.0.0.1", port)
    client = EtcdClient(parse_endpoints(f"http://127.0.0.1:{port}"), retry_for=5.0)
    try:
        yield kv, client
    finally:
        client.close()
        server.close()
        await server.wait_closed()


async def test_a_read_held_through_an_election_is_retried(member):
    kv, client = member
    answer = await client.call("KV", "Range", pb.RangeRequest(key=b"k"), write=False)
    assert answer.header.revision == 7 and kv.calls == 3


async def test_a_write_held_through_an_election_has_an_unknown_outcome(member):
    kv, client = member
    with pytest.raises(OutcomeUnknown):
        await client.call("KV", "Txn", pb.TxnRequest(), write=True)
    assert kv.calls == 1
