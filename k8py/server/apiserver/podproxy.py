"""pods/log, pods/exec, pods/attach and pods/portforward: the API server's way to a kubelet.

The API server checks what it can answer itself from the stored pod (upstream's
`LogLocation`/`ExecLocation`/`streamLocation`): which container (the only one when the
request names none; otherwise a 400 `a container name must be specified for pod p, choose
one of: [a b]`), whether it exists (`container c is not valid for pod p`), whether the pod
is bound (exec, attach and port-forward on an unbound pod are a 400 `pod p does not have a
host assigned`; its log is empty). Then it finds the pod's kubelet: the Node's
`status.addresses` (InternalIP first) and `status.daemonEndpoints.kubeletEndpoint.Port`; a
node without a kubelet (port 0: simulated nodes) is a 400 saying so, never a hang.

It reaches the kubelet over TLS with its kubelet client certificate (`KubeletClient`: a
CA-signed certificate in `system:masters`) and verifies the kubelet's serving certificate
against the cluster CA (by chain only: nodes may be addressed by names or addresses their
certificates do not list, and only the cluster CA issues kubelet certificates).

- log: `GET /containerLogs/{ns}/{pod}/{container}` with the log options; the body streams
  through as it comes (`follow`), and a kubelet's Status error comes back with its code;
- exec, attach: `/exec|attach/{ns}/{pod}/{container}?command=…&input=1&output=1&error=1&tty=1`
  (the kubelet's parameter names, as upstream's `streamParams`), portforward:
  `/portForward/{ns}/{pod}?port=…` (from `ports`, repeated or comma-separated); the
  client's HTTP Upgrade (WebSocket or SPDY/3.1) is relayed (`k8py.client.upgrading`), a
  refusal included: kubectl 1.32 offers WebSocket `v5.channel.k8s.io` (exec, attach) and
  `SPDY/3.1+portforward.k8s.io` (port-forward) first, the kubelet refuses both because the
  runtime's stream server does not speak them, and kubectl retries over SPDY/3.1; the
  Python client's `v4.channel.k8s.io` goes through as is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ssl
import urllib.parse
from typing import Any

import aiohttp
from aiohttp import web

from k8py.api import errors
from k8py.api.resources import Resource
from k8py.net import upgrading
from k8py.server.apiserver import queryparams
from k8py.server.apiserver.storage import ObjectStore

SUBRESOURCES = frozenset({"log", "exec", "attach", "portforward"})
LOG_OPTIONS = ("follow", "tailLines", "sinceSeconds", "sinceTime", "timestamps", "previous",
               "limitBytes")


@dataclasses.dataclass(frozen=True)
class KubeletClient:
    """The API server's credentials towards kubelets."""
    cert: str
    key: str
    ca: str

    @functools.cached_property
    def ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        context.check_hostname = False  # see the module docstring
        context.load_cert_chain(self.cert, self.key)
        return context


def _names(containers: list[dict[str, Any]]) -> str:
    return " ".join(c.get("name", "") for c in containers)


def choose_container(pod: dict[str, Any], requested: str) -> str:
    """The container a request is about (upstream's validateContainer)."""
    spec, name = pod.get("spec") or {}, pod["metadata"]["name"]
    containers = spec.get("containers") or []
    if not requested:
        if len(containers) == 1:
            return containers[0]["name"]
        if not containers:
            raise errors.BadRequest(f"a container name must be specified for pod {name}")
        message = (f"a container name must be specified for pod {name}, choose one of: "
                   f"[{_names(containers)}]")
        if spec.get("initContainers"):
            message += f" or one of the init containers: [{_names(spec['initContainers'])}]"
        raise errors.BadRequest(message)
    for key in ("containers", "initContainers", "ephemeralContainers"):
        if any(c.get("name") == requested for c in spec.get(key) or []):
            return requested
    raise errors.BadRequest(f"container {requested} is not valid for pod {name}")


async def kubelet_url(objects: ObjectStore, nodes: Resource, pod: dict[str, Any],
                      subresource: str) -> str | None:
    """`https://address:port` of the pod's kubelet; None if the pod is not bound."""
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        return None
    try:
        node = await objects.get(nodes, None, node_name)
    except errors.NotFound:
        raise errors.BadRequest(f'node "{node_name}" of pod "{pod["metadata"]["name"]}" '
                                f'does not exist') from None
    url = endpoint(node)
    if url is None:
        raise errors.BadRequest(f'node "{node_name}" has no kubelet endpoint to serve '
                                f'pods/{subresource} (is it a simulated node?)')
    return url


def endpoint(node: dict[str, Any]) -> str | None:
    """`https://address:port` of a node's kubelet (InternalIP first), None without one
    (port 0: simulated nodes)."""
    status = node.get("status") or {}
    port = (((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {})
            .get("Port") or 0)
    if not port:
        return None
    by_type = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    host = (by_type.get("InternalIP") or by_type.get("ExternalIP") or by_type.get("Hostname")
            or node["metadata"]["name"])
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class PodProxy:
    """Serves the four subresources for `RestHandler`."""

    def __init__(self, objects: ObjectStore, pods: Resource, nodes: Resource,
                 kubelet: KubeletClient | None):
        self.objects = objects
        self.pods = pods
        self.nodes = nodes
        self.kubelet = kubelet

    def _credentials(self) -> KubeletClient:
        if self.kubelet is None:
            raise errors.ServiceUnavailable("the API server has no kubelet client credentials")
        return self.kubelet

    async def serve(self, request: web.Request, namespace: str, name: str,
                    subresource: str) -> web.StreamResponse:
        pod = await self.objects.get(self.pods, namespace, name)
        if subresource == "log":
            if request.method != "GET":
                raise errors.MethodNotAllowed("the log subresource allows get")
            return await self._log(request, pod)
        if request.method not in ("GET", "POST"):
            raise errors.MethodNotAllowed(f"the {subresource} subresource allows get and create")
        query = request.query
        if subresource == "portforward":
            ports = [p for value in query.getall("ports", []) for p in value.split(",") if p]
            path = f"/portForward/{namespace}/{name}"
            params = [("port", p.strip()) for p in ports]
        else:
            container = choose_container(pod, query.get("container", ""))
            params = [("command", c) for c in query.getall("command", [])]
            if subresource == "exec" and not params:
                raise errors.BadRequest("you must specify at least one command for the "
                                        "container")
            for ours, theirs in (("stdin", "input"), ("stdout", "output"),
                                 ("stderr", "error"), ("tty", "tty")):
                if queryparams.boolean(query, ours):
                    params.append((theirs, "1"))
            if not any(k in ("input", "output", "error") for k, _ in params):
                raise errors.BadRequest("you must specify at least 1 of stdin, stdout, stderr")
            path = f"/{subresource}/{namespace}/{name}/{container}"
        base = await kubelet_url(self.objects, self.nodes, pod, subresource)
        if base is None:
            raise errors.BadRequest(f"pod {name} does not have a host assigned")
        if not upgrading.is_upgrade(request.headers):
            raise errors.BadRequest("Upgrade request required")
        url = f"{base}{path}?{urllib.parse.urlencode(params)}"
        try:
            upstream = await upgrading.dial(url, request.method,
                                            upgrading.upgrade_headers(request.headers),
                                            ssl=self._credentials().ssl)
        except (OSError, asyncio.TimeoutError) as exc:
            raise errors.InternalError(f"error dialing the kubelet at {base}: "
                                       f"{exc or type(exc).__name__}") from None
        return await upgrading.relay(request, upstream)

    async def _log(self, request: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        container = choose_container(pod, request.query.get("container", ""))
        base = await kubelet_url(self.objects, self.nodes, pod, "log")
        if base is None:  # upstream: an unscheduled pod's log is empty
            return web.Response(body=b"", content_type="text/plain")
        meta = pod["metadata"]
        params = [(k, request.query[k]) for k in LOG_OPTIONS if k in request.query]
        url = (f"{base}/containerLogs/{meta['namespace']}/{meta['name']}/{container}?"
               f"{urllib.parse.urlencode(params)}")
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                upstream = await session.get(url, ssl=self._credentials().ssl)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise errors.InternalError(f"error reading the log from the kubelet at "
                                           f"{base}: {exc or type(exc).__name__}") from None
            async with upstream:
                if upstream.status != 200:
                    body = await upstream.read()
                    return web.Response(status=upstream.status, body=body,
                                        content_type=upstream.content_type or "text/plain")
                response = web.StreamResponse(headers={"Content-Type": "text/plain"})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
