"""Two API servers on one real etcd cluster: a write acknowledged by one is seen by a read
with no resourceVersion (the most recent) through the other at once, by a get, a list and a
watch started from that list, and by a watch without a resourceVersion (its initial state).
Each server's own `revision` only follows its own traffic; consistency comes from asking
etcd (linearizable reads, `current_revision`). A guarded delete whose answer is lost is
retried and settled from etcd's history (tests/integration/store/test_etcd.py)."""

from __future__ import annotations

import asyncio
import os

import pytest

from k8py.api.resources import Registry, builtin
from k8py.client.client import Client
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver.authn import TokenFile
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.store import open_backend
from tests.integration.inloop import running_apiserver
from tests.integration.store.etcdcluster import ETCD

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd-server is not installed")

CONFIGMAPS = builtin("v1", "configmaps")


@pytest.fixture
async def two(tmp_path, etcd_cluster):
    """(client of server A, client of server B): two API servers, each with its own etcd
    client (its own connections and revision), over the session's cluster."""
    etcd_cluster.etcdctl("del", "--prefix", "")
    async with running_apiserver(tmp_path, etcd_cluster.endpoints,
                                 store_tls=etcd_cluster.tls()) as server:
        store_b = open_backend(",".join(reversed(etcd_cluster.endpoints.split(","))),
                               server.data_dir, **etcd_cluster.tls())
        await store_b.start()
        try:
            tokens = TokenFile(os.path.join(server.data_dir, "server", "cred", "tokens"))
            app_b = apiserver.make_app(store_b, tokens, Registry())
            yield (Client(InProcessTransport(server.app[apiserver.REST_KEY])),
                   Client(InProcessTransport(app_b[apiserver.REST_KEY])),
                   app_b[apiserver.REST_KEY].objects)
        finally:
            await store_b.close()


def configmap(name: str, value: str) -> dict:
    return {"metadata": {"name": name, "namespace": "default"}, "data": {"v": value}}


async def test_a_write_through_one_server_is_read_through_the_other(two):
    a, b, objects_b = two
    await b.list(CONFIGMAPS, "default")  # B has seen the store once, then falls behind
    for i in range(30):
        # a watch starting on B now shares this snapshot while it is held (a burst of
        # watches): it must not be taken for "now" once A has written
        held = await objects_b.snapshot(CONFIGMAPS, "default")
        if i % 3 == 0:
            written = await a.create(CONFIGMAPS, configmap(f"c{i}", str(i)))
        else:
            current = await a.get(CONFIGMAPS, "c" + str(i - i % 3), "default")
            current["data"]["v"] = str(i)
            written = await a.update(CONFIGMAPS, current)
        rv = written["metadata"]["resourceVersion"]
        name = written["metadata"]["name"]
        fresh = await objects_b.snapshot(CONFIGMAPS, "default")
        assert fresh.revision >= int(rv) > held.revision, f"stale snapshot at step {i}"
        del held, fresh
        got = await b.get(CONFIGMAPS, name, "default")
        assert got["metadata"]["resourceVersion"] == rv, f"stale get at step {i}"
        listed = await b.list(CONFIGMAPS, "default")
        assert int(listed["metadata"]["resourceVersion"]) >= int(rv)
        mine = [o for o in listed["items"] if o["metadata"]["name"] == name]
        assert mine and mine[0]["metadata"]["resourceVersion"] == rv, f"stale list at {i}"
        # a watch without a resourceVersion: its initial state has the write
        watch = b.watch(CONFIGMAPS, "default", resource_version="")
        try:
            seen = {}
            async with asyncio.timeout(10):
                async for batch in watch:
                    for _, obj in batch:
                        seen[obj["metadata"]["name"]] = obj["metadata"]["resourceVersion"]
                    if len(seen) >= len(listed["items"]):
                        break
            assert seen.get(name) == rv, f"stale watch initial state at step {i}"
        finally:
            await watch.aclose()
        # a watch from the list's resourceVersion gets A's next write, and only that
        later = await a.create(CONFIGMAPS, configmap(f"w{i}", "x"))
        watch = b.watch(CONFIGMAPS, "default",
                        resource_version=listed["metadata"]["resourceVersion"])
        try:
            async with asyncio.timeout(10):
                async for batch in watch:
                    (kind, obj), = batch
                    assert (kind, obj["metadata"]["name"]) == ("ADDED", f"w{i}")
                    assert obj["metadata"]["resourceVersion"] == \
                        later["metadata"]["resourceVersion"]
                    break
        finally:
            await watch.aclose()
        await a.delete(CONFIGMAPS, f"w{i}", "default")
