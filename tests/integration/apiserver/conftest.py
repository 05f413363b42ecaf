"""A real API server in the test's event loop (`tests.integration.inloop`), on a memory and
a SQLite store, and for ETCD_MODULES also on a real etcd cluster; and an admin HTTP client."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.integration.inloop import Server, free_port, running_apiserver  # noqa: F401
from tests.integration.store.etcdcluster import ETCD


# The modules that also run on etcd (the session's 3-member cluster, emptied before each
# test): the REST semantics that depend on the backend (resourceVersions, list paging at a
# revision, watches and their bookmarks, 410s, TTL Events, conflicts), in a few minutes.
ETCD_MODULES = {"test_rest", "test_typed_client", "test_contention", "test_crds", "test_jobs",
                "test_apply_migration", "test_wire_bytes", "test_autoscaling"}
STORES = ["memory", "sqlite", pytest.param("etcd", marks=pytest.mark.skipif(
    ETCD is None, reason="etcd (Debian's etcd-server) is not installed"))]


def pytest_collection_modifyitems(config, items):
    """Only ETCD_MODULES run on etcd: the others gain nothing backend-specific from it."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_etcd = callspec is not None and callspec.params.get("server") == "etcd"
        if on_etcd and item.module.__name__.rsplit(".", 1)[-1] not in ETCD_MODULES:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=STORES)
async def server(request, tmp_path):
    url, tls = {"memory": "memory://", "sqlite": ""}.get(request.param), None
    if request.param == "etcd":
        cluster = request.getfixturevalue("etcd_cluster")
        cluster.etcdctl("del", "--prefix", "")
        url, tls = cluster.endpoints, cluster.tls()
    async with running_apiserver(tmp_path, url, store_tls=tls) as running:
        yield running


class Client:
    """Minimal admin client: JSON in, (status, JSON) out."""

    def __init__(self, server: Server, session: aiohttp.ClientSession):
        self.server = server
        self.session = session

    async def request(self, method: str, path: str, body=None, *, raw: bytes | None = None,
                      content_type: str = "application/json", **params):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(method, self.server.url + path, data=data,
                                        headers=headers, params=params) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


@pytest.fixture
async def client(server):
    connector = aiohttp.TCPConnector(ssl=server.ssl())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Client(server, session)
