"""The store suite runs every test against every backend (kine runs the apiserver's storage
tests against each of its drivers the same way). The etcd backend runs against one real
3-member etcd cluster (TLS) for the session (`etcd_cluster`, shared with the API server
tests), emptied before each test."""

from __future__ import annotations

import asyncio

import pytest

from k8py.server.store import open_backend
from tests.integration.store.etcdcluster import ETCD

BACKENDS = ["memory", "sqlite", pytest.param("etcd", marks=pytest.mark.skipif(
    ETCD is None, reason="etcd (Debian's etcd-server) is not installed"))]


@pytest.fixture(params=BACKENDS)
def backend_url(request, tmp_path):
    if request.param == "memory":
        return "memory://"
    if request.param == "etcd":
        cluster = request.getfixturevalue("etcd_cluster")
        # every test starts from an empty keyspace (revisions keep growing: tests count
        # revisions from the store's revision at their start)
        cluster.etcdctl("del", "--prefix", "")
        return cluster.endpoints
    return f"sqlite://{tmp_path}/db/state.db"


@pytest.fixture
async def make_store(request, backend_url, tmp_path):
    """Opens stores on this test's backend (same file each time for sqlite); closes them."""
    opened = []
    tls = {}
    if backend_url.startswith("https://"):
        tls = request.getfixturevalue("etcd_cluster").tls()

    async def make(**options):
        query = "&".join(f"{k}={v}" for k, v in options.items())
        store = open_backend(backend_url + (f"?{query}" if query else ""), str(tmp_path), **tls)
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await asyncio.wait_for(store.close(), 30)


@pytest.fixture
async def store(make_store):
    return await make_store()
