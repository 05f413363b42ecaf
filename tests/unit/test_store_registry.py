"""Backends are chosen by URL scheme."""

from __future__ import annotations

import pytest

from k8py.server.store import EndpointError, open_backend
from k8py.server.store.memory import MemoryBackend
from k8py.server.store.sqlite import SQLiteBackend


def test_default_is_sqlite_under_the_data_dir():
    store = open_backend("", "/var/lib/k8py")
    assert isinstance(store, SQLiteBackend)
    assert store.path == "/var/lib/k8py/server/db/state.db"


def test_explicit_sqlite_path_and_options():
    store = open_backend("sqlite:///srv/db/k.db?retain=5000&compact_interval=2.5", "/x")
    assert store.path == "/srv/db/k.db"
    assert store.retain == 5000 and store.compact_interval == 2.5


def test_memory():
    assert isinstance(open_backend("memory://", "/x"), MemoryBackend)


@pytest.mark.parametrize(
    "url", ["etcd://127.0.0.1:2379", "mysql://db", "sqlite://?retain=many", "memory://?x=1"]
)
def test_unusable_endpoints(url):
    with pytest.raises(EndpointError):
        open_backend(url, "/x")
