"""The HTTPS transport: a kubeconfig's server and credentials, JSON over aiohttp.

Credentials come from the kubeconfig's current context: a CA (file or `-data`), and a client
certificate and key (file or `-data`) or a bearer token. Python's `ssl` loads a certificate
chain only from files, so embedded ones are written to a private temporary file for the
moment of loading and removed at once.

A watch is read as newline-delimited JSON; an ERROR event with a 410 raises `Expired`, other
ERROR events the error they carry; BOOKMARK events are dropped (the informer tracks versions
from the objects it sees). Connection failures raise `ServiceUnavailable`, so callers handle
one error family.

Several API servers (`servers`, a `k8py.client.loadbalancer.ServerList`): each request
goes to the list's first candidate. A connection that cannot be made (nothing was sent) moves
any request on to the next candidate; a connection lost or timed out mid-request moves only
reads (GET) on, since a write may have been done. Either marks the server failed, which also
cuts the watches open to it: their informers watch again from their last resourceVersion, on
the next server. `request` sends the non-resource requests (`/cacerts`, the kubelet's serving
certificate) the same way. An HTTP error is an answer, never a reason to go elsewhere.
`check_health` probes every known server (`/readyz`) so a failed one comes back and a silent
one is noticed.

A renewed client certificate (`renew_client_certificate`, the kubelet's rotation) is loaded
into the TLS context and new requests go out on a new connection pool, so they present it;
the old pool (watches among its connections) is closed once the old certificate ends: a
watch cut then is re-made by its informer with the new one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import multidict
import yaml

from k8py.api import errors
from k8py.client.client import Event, Ref
from k8py.client.loadbalancer import ServerList

READS = frozenset({"GET", "HEAD"})  # sent again elsewhere after a connection lost mid-way
HEALTH_INTERVAL = 5.0
HEALTH_TIMEOUT = 5.0


class KubeconfigError(Exception):
    """The kubeconfig is missing, unreadable or lacks what a connection needs."""


def _path(ref: Ref) -> str:
    resource = ref.resource
    base = f"/apis/{resource.group}/{resource.version}" if resource.group else "/api/v1"
    if ref.namespace and resource.namespaced:
        base += f"/namespaces/{quote(ref.namespace)}"
    base += f"/{resource.plural}"
    if ref.name:
        base += f"/{quote(ref.name)}"
        if ref.subresource:
            base += f"/{ref.subresource}"
    return base


def _materialize(entry: dict, key: str, folder: str) -> str | None:
    """The path of `key` (a file) or of `key-data` (embedded, written to `folder`)."""
    if entry.get(key):
        return entry[key]
    data = entry.get(f"{key}-data")
    if not data:
        return None
    path = os.path.join(folder, key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(data))
    return path


def load_kubeconfig(path: str) -> tuple[str, ssl.SSLContext, str | None]:
    """(server URL, TLS context with the client certificate if any, bearer token if any)."""
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
    except OSError as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"kubeconfig {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise KubeconfigError(f"kubeconfig {path} is not a kubeconfig (a YAML mapping)")

    def named(section: str, name: str) -> dict:
        for item in config.get(section) or []:
            if item.get("name") == name:
                return item.get(section[:-1]) or {}
        raise KubeconfigError(f"kubeconfig {path} has no {section[:-1]} {name!r}")

    context = named("contexts", config.get("current-context", ""))
    cluster = named("clusters", context.get("cluster", ""))
    user = named("users", context.get("user", "")) if context.get("user") else {}
    if not cluster.get("server"):
        raise KubeconfigError(f"kubeconfig {path}: the cluster has no server")
    with tempfile.TemporaryDirectory(prefix="k8py-kubeconfig-") as folder:
        ca = _materialize(cluster, "certificate-authority", folder)
        tls = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
        cert = _materialize(user, "client-certificate", folder)
        key = _materialize(user, "client-key", folder)
        if cert and key:
            tls.load_cert_chain(cert, key)
    return cluster["server"].rstrip("/"), tls, user.get("token")


class HttpTransport:
    def __init__(self, server: str, tls: ssl.SSLContext, token: str | None = None,
                 user_agent: str = "k8py", connections: int = 64,
                 servers: ServerList | None = None):
        self.servers = servers if servers is not None else ServerList(server)
        self.servers.on_failure(self._cut_watches)
        # the watches open, by server: cut when their server is marked failed
        self._watches: dict[str, set[aiohttp.ClientResponse]] = {}
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._tls, self._connections = tls, connections
        self._client_session: aiohttp.ClientSession | None = None
        # `acting_as`: the transport whose connections this one uses, and the headers
        self._parent: HttpTransport | None = None
        self._impersonation: dict[str, str] = {}
        self._groups: tuple[str, ...] = ()
        # the pools of previous client certificates, each closed by its task
        self._retiring: dict[asyncio.Task, aiohttp.ClientSession] = {}

    def acting_as(self, user: str, groups: tuple[str, ...] = ()) -> "HttpTransport":
        """This transport's connections and credentials, impersonating `user` (and
        `groups`) on every request, as `kubectl --as`; the credentials must be allowed to
        (verb `impersonate`). Closing it leaves the connections to this transport."""
        view = HttpTransport(self.server, self._tls, servers=self.servers)
        view._headers = self._headers
        view._parent = self
        view._impersonation = {"Impersonate-User": user}
        view._groups = groups
        return view

    def _request_headers(self, headers: dict[str, str] | None) -> Any:
        if not self._impersonation:
            return headers
        merged = multidict.CIMultiDict(headers or {})
        merged.update(self._impersonation)
        for group in self._groups:
            merged.add("Impersonate-Group", group)
        return merged

    @property
    def _session(self) -> aiohttp.ClientSession:
        """Made on first use, inside the event loop that uses it."""
        if self._parent is not None:
            return self._parent._session
        if self._client_session is None:
            self._client_session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(ssl=self._tls, limit=self._connections),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._client_session

    @property
    def server(self) -> str:
        """The URL requests go to now."""
        return self.servers.current

    @property
    def tls(self) -> ssl.SSLContext:
        return self._tls

    def set_token(self, token: str) -> None:
        """Send this bearer token from the next request on (a renewed short-lived token;
        watches already open keep the one they began with)."""
        self._headers["Authorization"] = f"Bearer {token}"
        if self._client_session is not None:
            self._client_session.headers["Authorization"] = f"Bearer {token}"

    def renew_client_certificate(self, cert: str, key: str, retire_after: float) -> None:
        """Present the chain in `cert` from now on; close the connections opened with the
        previous one after `retire_after` seconds (when it ends)."""
        self._tls.load_cert_chain(cert, key)
        old, self._client_session = self._client_session, None
        if old is not None:
            async def retire() -> None:
                await asyncio.sleep(retire_after)
                await old.close()
            task = asyncio.get_running_loop().create_task(retire())
            self._retiring[task] = old
            task.add_done_callback(lambda done: self._retiring.pop(done, None))

    @classmethod
    def from_kubeconfig(cls, path: str, user_agent: str = "k8py") -> "HttpTransport":
        server, tls, token = load_kubeconfig(path)
        return cls(server, tls, token, user_agent)

    async def call(self, method: str, ref: Ref, *, query: Mapping[str, str] | None = None,
                   body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": content_type} if data is not None else None
        status, raw = await self._send(method, _path(ref), query, data, headers, 60)
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {}
        if status >= 400:
            raise errors.from_status(decoded, status)
        return decoded

    async def request(self, method: str, path: str, *, body: Any = None,
                      timeout: float = 30) -> tuple[int, bytes]:
        """A request outside the API's resources (`/cacerts`, k8py's `/v1-k8py/...`), sent
        as `call` sends one, failing over alike: its status and body."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if data is not None else None
        return await self._send(method, path, None, data, headers, timeout)

    async def _send(self, method: str, path: str, query: Mapping[str, str] | None,
                    data: bytes | None, headers: dict[str, str] | None,
                    timeout: float) -> tuple[int, bytes]:
        candidates = self.servers.candidates()
        for attempt, server in enumerate(candidates):
            last = attempt == len(candidates) - 1
            try:
                async with self._session.request(
                    method, server + path, params=dict(query or {}), data=data,
                    headers=self._request_headers(headers),
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    raw = await response.read()
                    status = response.status
            except aiohttp.ClientConnectorError as exc:  # not connected: nothing was sent
                self.servers.failed(server)
                if last:
                    raise errors.ServiceUnavailable(
                        f"cannot reach the API server: {exc}") from None
                continue
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.servers.failed(server)
                if last or method not in READS:
                    raise errors.ServiceUnavailable(
                        f"cannot reach the API server: {exc}") from None
                continue
            self.servers.healthy(server)
            return status, raw
        raise AssertionError("a server list always has a candidate")

    async def _open_watch(self, ref: Ref, query: Mapping[str, str]
                          ) -> tuple[str, aiohttp.ClientResponse]:
        """The watch's response from the first candidate that answers."""
        candidates = self.servers.candidates()
        for attempt, server in enumerate(candidates):
            try:
                response = await self._session.get(server + _path(ref), params=dict(query),
                                                   headers=self._request_headers(None))
            except (aiohttp.ClientError, OSError, TimeoutError):
                self.servers.failed(server)
                if attempt == len(candidates) - 1:
                    raise
                continue
            self.servers.healthy(server)
            return server, response
        raise AssertionError("a server list always has a candidate")

    async def watch(self, ref: Ref, query: Mapping[str, str]) -> AsyncIterator[list[Event]]:
        server, response = None, None
        try:
            server, response = await self._open_watch(ref, query)
            self._watches.setdefault(server, set()).add(response)
            if response.status >= 400:
                raw = await response.read()
                raise errors.from_status(json.loads(raw or b"{}"), response.status)
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "BOOKMARK":
                    continue
                if kind == "ERROR":
                    raise errors.from_status(obj, obj.get("code", 500))
                yield [(kind, obj)]
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            if server is not None and isinstance(exc, (aiohttp.ClientPayloadError,
                                                       aiohttp.ServerDisconnectedError)):
                self.servers.failed(server)  # gone mid-stream: the next watch goes elsewhere
            raise errors.ServiceUnavailable(f"watch interrupted: {exc}") from None
        finally:
            if response is not None:
                self._watches.get(server, set()).discard(response)
                response.release()

    def _cut_watches(self, server: str) -> None:
        for response in self._watches.pop(server, set()):
            response.close()

    async def check_health(self, interval: float = HEALTH_INTERVAL,
                           timeout: float = HEALTH_TIMEOUT) -> None:
        """Probe every known server's `/readyz` every `interval` seconds, until cancelled:
        an answer of 200 marks it healthy, anything else (or none) failed."""
        while True:
            for server in self.servers.candidates():
                try:
                    async with self._session.get(
                            server + "/readyz", headers=self._request_headers(None),
                            timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, OSError, TimeoutError):
                    ok = False
                if ok:
                    self.servers.healthy(server)
                else:  # again while it stays down: it stays passed over
                    self.servers.failed(server)
            await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._parent is not None:
            return
        for task, session in list(self._retiring.items()):
            task.cancel()
            await session.close()
        if self._client_session is not None:
            await self._client_session.close()
