"""The store suite runs every test against every backend (kine runs the apiserver's storage
tests against each of its drivers the same way)."""

from __future__ import annotations

import pytest

from k8py.server.store import open_backend

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
def backend_url(request, tmp_path):
    if request.param == "memory":
        return "memory://"
    return f"sqlite://{tmp_path}/db/state.db"


@pytest.fixture
async def make_store(backend_url, tmp_path):
    """Opens stores on this test's backend (same file each time for sqlite); closes them."""
    opened = []

    async def make(**options):
        query = "&".join(f"{k}={v}" for k, v in options.items())
        store = open_backend(backend_url + (f"?{query}" if query else ""), str(tmp_path))
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store):
    return await make_store()
