"""The store: the cluster's only state, behind an etcd-like contract.

`backend.py` holds the contract and its errors; `log.py` the machinery shared by backends that
keep a log of key versions (group commit, key index, watch fan-out, TTL, compaction); `memory`
and `sqlite` are those backends. `etcd` is the contract over a real etcd cluster (`http://` or
`https://` endpoints, comma-separated, as k3s takes them). A backend is chosen by the scheme of
`--datastore-endpoint`, through the registry below (kine's `drivers/registry.go`).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable

from k8py.server.store.backend import Backend
from k8py.server.store.etcd import EtcdBackend
from k8py.server.store.etcdclient import parse_endpoints
from k8py.server.store.log import LogBackend
from k8py.server.store.memory import MemoryBackend
from k8py.server.store.sqlite import SQLiteBackend

DEFAULT_SQLITE_PATH = os.path.join("server", "db", "state.db")  # under the data dir


class EndpointError(ValueError):
    """A datastore endpoint that names no usable backend."""


def _memory(parsed: urllib.parse.SplitResult, data_dir: str, options: dict) -> LogBackend:
    return MemoryBackend(**options)


def _sqlite(parsed: urllib.parse.SplitResult, data_dir: str, options: dict) -> LogBackend:
    path = parsed.netloc + parsed.path
    if not path:
        path = os.path.join(data_dir, DEFAULT_SQLITE_PATH)
    return SQLiteBackend(path, **options)


def _etcd(parsed: urllib.parse.SplitResult, data_dir: str, options: dict) -> EtcdBackend:
    try:
        endpoints = parse_endpoints(f"{parsed.scheme}://{parsed.netloc}{parsed.path}")
    except ValueError as exc:
        raise EndpointError(str(exc)) from None
    return EtcdBackend(endpoints, **options)


BACKENDS: dict[str, Callable[[urllib.parse.SplitResult, str, dict], Backend]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "http": _etcd,
    "https": _etcd,
}

# Options a URL may carry as query parameters, with their types.
URL_OPTIONS = {"retain": int, "compact_interval": float}


def open_backend(endpoint: str, data_dir: str, *, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None) -> Backend:
    """The (not yet started) backend an endpoint URL names, e.g. `sqlite:///var/db/state.db`,
    `sqlite://` (the default file under the data dir), `memory://`, `sqlite://?retain=5000`,
    `https://h1:2379,https://h2:2379` (etcd; TLS files from `--datastore-cafile` etc.)."""
    parsed = urllib.parse.urlsplit(endpoint or "sqlite://")
    factory = BACKENDS.get(parsed.scheme)
    if factory is None:
        known = ", ".join(f"{name}://" for name in BACKENDS)
        raise EndpointError(f"unsupported datastore {endpoint!r}: use one of {known}")
    options = {}
    for name, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
        if name not in URL_OPTIONS:
            raise EndpointError(f"unknown datastore option {name!r} in {endpoint!r}")
        try:
            options[name] = URL_OPTIONS[name](value)
        except ValueError:
            raise EndpointError(f"bad value for datastore option {name!r}: {value!r}") from None
    tls = {"cafile": cafile, "certfile": certfile, "keyfile": keyfile}
    if factory is _etcd:
        options.update(tls)
    elif any(tls.values()):
        raise EndpointError("--datastore-cafile, --datastore-certfile and --datastore-keyfile "
                            "apply to an etcd endpoint (https://host:2379) only")
    return factory(parsed, data_dir, options)
