"""The etcd backend against failures of a real 3-member cluster (TLS): a member dies and
writes go on, a watch resumes on another member without gap or duplicate, compacted
revisions are `Compacted` (the API server's 410), and the keys are kube-apiserver's; a guarded
delete whose answer was lost is settled from etcd's history."""

from __future__ import annotations

import asyncio

import pytest

from k8py.server.apiserver.storage import _status
from k8py.server.store import open_backend
from k8py.server.store.backend import Compacted, Conflict, EventType
from k8py.server.store.etcdclient import OutcomeUnknown
from tests.integration.store.etcdcluster import ETCD, EtcdCluster

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd-server is not installed")


@pytest.fixture
def cluster(tmp_path):
    cluster = EtcdCluster(str(tmp_path / "etcd"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def open_store(cluster, tmp_path):
    opened = []

    async def make(endpoints: str | None = None, query: str = ""):
        store = open_backend((endpoints or cluster.endpoints) + query, str(tmp_path),
                             **cluster.tls())
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await asyncio.wait_for(store.close(), 30)


def leader_first(cluster: EtcdCluster) -> tuple[int, str]:
    leader = cluster.leader()
    order = [leader] + [i for i in range(3) if i != leader]
    return leader, ",".join(f"https://127.0.0.1:{cluster.client_ports[i]}" for i in order)


async def test_writes_go_on_when_the_leader_member_dies(cluster, open_store):
    leader, endpoints = leader_first(cluster)
    store = await open_store(endpoints)
    kv = await store.create("/registry/core/configmaps/default/a", b"0")
    # the member the store talks to, and the cluster's leader; killed while the event loop
    # runs, as a member dies under a running server (which then sees its connection close)
    await asyncio.to_thread(cluster.kill, leader)
    for i in range(1, 20):
        kv = await store.update(kv.key, str(i).encode(), mod_revision=kv.mod_revision)
    created = await store.create("/registry/core/configmaps/default/b", b"after")
    assert (await store.get(kv.key)).value == b"19"
    assert created.mod_revision == kv.mod_revision + 1
    # etcdctl sees the objects under /registry, as for kube-apiserver
    keys = cluster.etcdctl("get", "--prefix", "/registry", "--keys-only").split()
    assert keys == ["/registry/core/configmaps/default/a", "/registry/core/configmaps/default/b"]


async def test_watch_resumes_on_another_member_without_gap_or_duplicate(cluster, open_store):
    _, endpoints = leader_first(cluster)
    watching = await open_store(",".join(reversed(endpoints.split(","))))  # a follower first
    writer = await open_store(endpoints)
    watch = watching.watch("/registry/w/")
    written = [(await writer.create(f"/registry/w/{i}", b"x")).mod_revision for i in range(5)]
    seen = []
    while len(seen) < 5:
        seen += [e.revision for e in await asyncio.wait_for(anext(watch), 10)]
    follower = cluster.client_ports.index(int(watching.client.endpoints[0].port))
    await asyncio.to_thread(cluster.kill, follower)

    async def write_more():
        for i in range(5, 40):
            kv = await writer.create(f"/registry/w/{i}", b"x")
            written.append(kv.mod_revision)
            await writer.delete(kv.key, mod_revision=kv.mod_revision)
            written.append(kv.mod_revision + 1)

    await asyncio.wait_for(write_more(), 60)
    while len(seen) < len(written):
        events = await asyncio.wait_for(anext(watch), 20)
        assert all(e.type in (EventType.CREATE, EventType.DELETE) for e in events)
        seen += [e.revision for e in events]
    watch.close()
    assert seen == written


async def test_compacted_revisions_are_410(cluster, open_store):
    store = await open_store()
    other = await open_store()  # compacts behind the first store's back
    kv = await store.create("/registry/c/a", b"1")
    for i in range(5):
        kv = await store.update(kv.key, str(i).encode(), mod_revision=kv.mod_revision)
    old = kv.mod_revision - 3
    await other.compact(kv.mod_revision)
    with pytest.raises(Compacted) as info:
        await store.get(kv.key, revision=old)
    assert _status(info.value, None, "a").code == 410
    with pytest.raises(Compacted):
        await store.range("/registry/c/", revision=old)
    watch = store.watch("/registry/c/", start_revision=old)  # etcd says so, not the store
    with pytest.raises(Compacted) as info:
        await asyncio.wait_for(anext(watch), 10)
    assert info.value.compact_revision == kv.mod_revision
    assert store.compact_revision == kv.mod_revision
    assert (await store.get(kv.key, revision=kv.mod_revision)).value == b"4"


async def test_periodic_compaction_elects_one_server(cluster, open_store):
    """kube-apiserver's compactor: two servers, each round one compacts; history stays."""
    a = await open_store(query="?compact_interval=0.2")
    b = await open_store(query="?compact_interval=0.2")
    kv = await a.create("/registry/p/a", b"0")
    for i in range(10):
        kv = await a.update(kv.key, str(i).encode(), mod_revision=kv.mod_revision)
    from tests.conftest import eventually

    await eventually(lambda: max(a.compact_revision, b.compact_revision) >= kv.mod_revision,
                     timeout=10, what="a compaction past the updates")
    with pytest.raises(Compacted):
        await a.get(kv.key, revision=kv.mod_revision - 5)


def lose_answers(store, count: int, *, applied: bool) -> None:
    """The next `count` Txn calls lose their answer (as when the member dies after the
    proposal): the write happens (applied) or not, and the caller hears OutcomeUnknown."""
    real = store.client.call
    left = [count]

    async def call(service, method, request, *, write):
        if method == "Txn" and left[0]:
            left[0] -= 1
            if applied:
                await real(service, method, request, write=write)
            raise OutcomeUnknown("etcd KV.Txn: stream reset; outcome unknown")
        return await real(service, method, request, write=write)

    store.client.call = call


async def test_guarded_delete_whose_answer_was_lost_is_settled(etcd_cluster, tmp_path):
    store = open_backend(etcd_cluster.endpoints, str(tmp_path), **etcd_cluster.tls())
    await store.start()
    try:
        first = await store.create("/registry/t/lost/a", b"1")
        await store.create("/registry/t/lost/ab", b"x")  # a longer name under the same prefix
        lose_answers(store, 1, applied=True)
        gone = await store.delete("/registry/t/lost/a", mod_revision=first.mod_revision)
        assert (gone.value, gone.mod_revision) == (b"1", first.mod_revision)
        assert await store.get("/registry/t/lost/a") is None

        # not applied, and another writer moved the key on meanwhile: a conflict, as usual
        second = await store.create("/registry/t/lost/a", b"2")
        lose_answers(store, 1, applied=False)
        moved = await store.update("/registry/t/lost/a", b"3", mod_revision=second.mod_revision)
        with pytest.raises(Conflict):
            await store.delete("/registry/t/lost/a", mod_revision=second.mod_revision)

        # not applied, key untouched: the second attempt deletes it
        lose_answers(store, 1, applied=False)
        gone = await store.delete("/registry/t/lost/a", mod_revision=moved.mod_revision)
        assert gone.value == b"3" and await store.get("/registry/t/lost/a") is None
        assert (await store.get("/registry/t/lost/ab")).value == b"x"
    finally:
        await store.close()
