"""The kubelet's HTTPS server (:10250): container logs, exec, attach, port-forward, stats.

Entry point for the agent: `serve(config, cri, pods, ready)` — run it as a task from the
agent daemon; it serves until cancelled. `pods()` returns this node's pods as the kubelet
knows them (spec from the API, status as the kubelet last computed or reported it: a copy or
a read-only view, never mutated here). `ready` is set once the port is listening.

Who may call: TLS with the kubelet serving certificate (`config.tls_cert`/`tls_key`,
issued from the cluster CA; reloaded when the file is replaced, `tls.follow`); a client
certificate is optional and, when shown, verified against the cluster CA
(`config.client_ca`). Every request, `/healthz` included, is then authenticated and
authorized as upstream's kubelet in webhook mode (`auth.KubeletAuth`: the certificate or a
bearer token through a TokenReview, then SubjectAccessReviews on `nodes/<subresource>`):
401 `Unauthorized`, 403 `Forbidden (user=…)` in plain text.

Endpoints, as upstream's kubelet:
- `GET /healthz`, `GET /pods` (a PodList of `pods()`);
- `GET /stats/summary` (the Summary API), `GET /metrics/resource` (what metrics-server
  scrapes), both from the runtime's container stats and /proc (`stats`); `GET /metrics`,
  this process's figures in the Prometheus text format;
- `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`, `tailLines`,
  `sinceSeconds`, `sinceTime`, `timestamps`, `previous`, `limitBytes` (see `logs`). Which
  container's log: upstream's rules over the pod's status (`log_container_id`): the running
  one, else the last terminated one; `previous` the last terminated one; a waiting
  container is a 400 `container "c" in pod "p" is waiting to start: <reason>`;
- `/exec/{namespace}/{pod}/{container}?command=…&input=1&output=1&error=1&tty=1` (also
  `stdin`/`stdout`/`stderr`, `true`), `/attach/{namespace}/{pod}/{container}`,
  `/portForward/{namespace}/{pod}?port=…`: GET or POST with an HTTP Upgrade. The kubelet
  asks the runtime (CRI `Exec`/`Attach`/`PortForward`) for a stream URL on its loopback
  stream server and relays the upgrade there (`k8py.client.upgrading`); the runtime speaks
  the stream protocols (SPDY/3.1; WebSocket channel protocols up to v4). A WebSocket upgrade
  offering none of the subprotocols the runtime speaks (kubectl 1.32 offers only
  `v5.channel.k8s.io` for exec and `SPDY/3.1+portforward.k8s.io` for port-forward) is
  refused with a 400 at once, which kubectl takes as its cue to retry over SPDY.

Containers are found through the pod's status (`containerID`, `containerd://<id>`) and the
runtime (`ContainerStatus` for the log path, `ListContainers` for the sandbox), so the
server needs nothing but the CRI client and `pods()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from k8py import tls
from k8py.agent.config import AgentConfig
from k8py import metrics
from k8py.agent.kubelet import logs, stats
from k8py.agent.kubelet.auth import AuthorizationFailed, KubeletAuth, Unauthenticated
from k8py.api import errors
from k8py.net import upgrading
from k8py.runtime import cri_pb2 as pb
from k8py.runtime.cri import CriClient, CriError

log = logging.getLogger(__name__)

PODS_KEY = web.AppKey("pods", object)
# WebSocket subprotocols of containerd 1.6's stream server ("" = no Sec-WebSocket-Protocol)
EXEC_WEBSOCKET_PROTOCOLS = frozenset({"", "channel.k8s.io", "base64.channel.k8s.io",
                                      "v4.channel.k8s.io", "v4.base64.channel.k8s.io"})
PORT_FORWARD_WEBSOCKET_PROTOCOLS = frozenset({"", "v4.channel.k8s.io",
                                              "v4.base64.channel.k8s.io"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain",
                        charset="utf-8")


def guard(auth: KubeletAuth):
    """The middleware that lets through only whom `auth` authenticates and authorizes."""
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        try:
            caller = await auth.authenticate(peercert, request.headers)
        except Unauthenticated:
            return _text(401, "Unauthorized")
        try:
            refusal = await auth.authorize(caller, request.method, request.path)
        except AuthorizationFailed as exc:
            return _text(500, str(exc))
        if refusal is not None:
            log.debug("%s %s: %s", request.method, request.path, refusal.strip())
            return _text(403, refusal)
        return await handler(request)

    return middleware


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.StatusError as exc:
        return web.json_response(exc.status(), status=exc.code)
    except CriError as exc:
        status = 404 if exc.status.name == "NOT_FOUND" else 500
        error = errors.NotFound(exc.message) if status == 404 else errors.InternalError(
            exc.message or str(exc))
        return web.json_response(error.status(), status=status)
    except OSError as exc:
        return web.json_response(errors.InternalError(str(exc)).status(), status=500)


def container_status(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(key) or []:
            if entry.get("name") == container:
                return entry
    return None


def container_spec(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    spec = pod.get("spec") or {}
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for entry in spec.get(key) or []:
            if entry.get("name") == container:
                return entry
    return None


def runtime_id(container_id: str) -> str:
    """`containerd://abc` → `abc`."""
    return container_id.partition("://")[2] or container_id


def log_container_id(pod: dict[str, Any], container: str, previous: bool) -> str:
    """The runtime ID of the container whose log to serve (upstream's
    validateContainerLogStatus); BadRequest with upstream's words otherwise."""
    name = pod["metadata"]["name"]
    status = container_status(pod, container)
    if status is None:
        if container_spec(pod, container) is not None:  # no status written yet
            raise errors.BadRequest(f'container "{container}" in pod "{name}" is waiting to '
                                    f'start: ContainerCreating')
        raise errors.BadRequest(f'container "{container}" in pod "{name}" is not available')
    state, last = status.get("state") or {}, status.get("lastState") or {}
    waiting, running, terminated = state.get("waiting"), state.get("running"), state.get(
        "terminated")
    last_terminated = last.get("terminated")
    if previous:
        if not last_terminated or not last_terminated.get("containerID"):
            raise errors.BadRequest(f'previous terminated container "{container}" in pod '
                                    f'"{name}" not found')
        return runtime_id(last_terminated["containerID"])
    if running is not None and status.get("containerID"):
        return runtime_id(status["containerID"])
    if terminated is not None:
        found = terminated.get("containerID") or (last_terminated or {}).get("containerID")
        if not found:
            raise errors.BadRequest(f'container "{container}" in pod "{name}" is terminated')
        return runtime_id(found)
    if last_terminated is not None:
        if not last_terminated.get("containerID"):
            raise errors.BadRequest(f'container "{container}" in pod "{name}" is terminated')
        return runtime_id(last_terminated["containerID"])
    if waiting is not None:
        reason = waiting.get("reason") or ""
        reason = {"ErrImagePull": "image can't be pulled",
                  "ImagePullBackOff": "trying and failing to pull image"}.get(reason, reason)
        raise errors.BadRequest(f'container "{container}" in pod "{name}" is waiting to '
                                f'start: {reason}')
    raise errors.BadRequest(f'container "{container}" in pod "{name}" is waiting to start '
                            f'- no logs yet')


def running_container_id(pod: dict[str, Any], container: str) -> str:
    """The runtime ID of the running container to exec in or attach to."""
    name = pod["metadata"]["name"]
    status = container_status(pod, container)
    state = (status or {}).get("state") or {}
    if state.get("running") is not None and status.get("containerID"):
        return runtime_id(status["containerID"])
    waiting = state.get("waiting")
    if waiting is not None:
        raise errors.BadRequest(f'container "{container}" in pod "{name}" is waiting to '
                                f'start: {waiting.get("reason") or "ContainerCreating"}')
    if state.get("terminated") is not None:
        raise errors.BadRequest(f'container "{container}" in pod "{name}" is terminated')
    if container_spec(pod, container) is not None:  # no status written yet
        raise errors.BadRequest(f'container "{container}" in pod "{name}" is waiting to '
                                f'start: ContainerCreating')
    raise errors.BadRequest(f'container not found ("{container}")')


class KubeletServer:
    """The handlers, over a CRI client, this node's pods and the logs directory."""

    def __init__(self, cri: CriClient, pods: Callable[[], Iterable[dict[str, Any]]],
                 logs_dir: str, auth: KubeletAuth):
        self.cri = cri
        self.pods = pods
        self.logs_dir = logs_dir
        self.auth = auth
        self.stats = stats.Collector(cri, auth.node_name)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[guard(self.auth), _errors])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/pods", self.list_pods)
        app.router.add_get("/stats/summary", self.stats_summary)
        app.router.add_get("/metrics/resource", self.resource_metrics)
        app.router.add_get("/metrics", self.process_metrics)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        for method in ("GET", "POST"):
            app.router.add_route(method, "/exec/{namespace}/{pod}/{container}", self.exec)
            app.router.add_route(method, "/attach/{namespace}/{pod}/{container}", self.attach)
            app.router.add_route(method, "/portForward/{namespace}/{pod}", self.port_forward)
        return app

    def _pod(self, request: web.Request) -> dict[str, Any]:
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        for pod in self.pods():
            meta = pod.get("metadata") or {}
            if meta.get("name") == name and meta.get("namespace", "default") == namespace:
                return pod
        raise errors.not_found("pods", name)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def list_pods(self, request: web.Request) -> web.Response:
        items = [{"apiVersion": "v1", "kind": "Pod", **pod} for pod in self.pods()]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                  "items": items})

    # --- stats and metrics ------------------------------------------------------------------

    async def stats_summary(self, request: web.Request) -> web.Response:
        return web.json_response(await self.stats.summary(self.pods()))

    async def resource_metrics(self, request: web.Request) -> web.Response:
        try:
            summary, failed = await self.stats.summary(self.pods()), False
        except CriError as exc:  # the node's figures still answer, as upstream's
            log.warning("container stats: %s", exc)
            summary = {"node": self.stats.node(), "pods": []}
            failed = True
        return web.Response(body=stats.resource_metrics(summary, failed).encode(),
                            headers={"Content-Type": metrics.CONTENT_TYPE})

    async def process_metrics(self, request: web.Request) -> web.Response:
        registry = metrics.Registry()
        registry.collectors.append(metrics.process_families)
        return web.Response(body=registry.exposition().encode(),
                            headers={"Content-Type": metrics.CONTENT_TYPE})

    # --- logs -------------------------------------------------------------------------------

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        pod = self._pod(request)
        container = request.match_info["container"]
        if container_spec(pod, container) is None:
            raise errors.BadRequest(f"container {container} is not valid for pod "
                                    f"{pod['metadata']['name']}")
        try:
            options = logs.LogOptions.from_query(request.query)
        except ValueError as exc:
            raise errors.BadRequest(str(exc)) from None
        previous = _truthy(request.query.get("previous"))
        container_id = log_container_id(pod, container, previous)
        path = await self._log_path(pod, container, container_id, previous)

        async def running() -> bool:
            try:
                status = await self.cri.container_status(container_id)
            except CriError:
                return False
            return status.status.state == pb.CONTAINER_RUNNING

        follow = options.follow and not previous and await running()
        if options.follow and not follow:
            options = logs.LogOptions(False, options.tail_lines, options.since,
                                      options.timestamps, options.limit_bytes)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        if path is not None:
            async for chunk in logs.read_log(path, options, running=running if follow else None):
                await response.write(chunk)
        await response.write_eof()
        return response

    async def _log_path(self, pod: dict[str, Any], container: str, container_id: str,
                        previous: bool) -> str | None:
        """The container's log file: where the runtime says, else where the kubelet puts
        it (`<logs>/<ns>_<pod>_<uid>/<container>/<restart>.log`); None if there is none."""
        try:
            path = (await self.cri.container_status(container_id)).status.log_path
        except CriError:
            path = ""
        if not path:
            meta = pod["metadata"]
            restarts = (container_status(pod, container) or {}).get("restartCount", 0)
            path = os.path.join(
                self.logs_dir, f"{meta.get('namespace', 'default')}_{meta['name']}_{meta['uid']}",
                container, f"{restarts - 1 if previous else restarts}.log")
        return path if os.path.exists(path) else None

    # --- streams ----------------------------------------------------------------------------

    @staticmethod
    def _check_upgrade(request: web.Request, websocket_protocols: frozenset[str]) -> None:
        if not upgrading.is_upgrade(request.headers):
            raise errors.BadRequest("Upgrade request required")
        log.debug("%s %s: upgrade to %s (%s)", request.method, request.path,
                  request.headers.get("Upgrade"), request.headers.get("Sec-WebSocket-Protocol")
                  or request.headers.get("X-Stream-Protocol-Version"))
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if not websocket_protocols.intersection(offered):
            raise errors.BadRequest(
                f"the container runtime's stream server speaks none of the WebSocket "
                f"subprotocols {', '.join(p for p in offered if p)}; retry over SPDY/3.1")

    async def _relay(self, request: web.Request, url: str) -> web.StreamResponse:
        upstream = await upgrading.dial(url, request.method,
                                        upgrading.upgrade_headers(request.headers))
        return await upgrading.relay(request, upstream)

    def _stdio(self, request: web.Request) -> tuple[bool, bool, bool, bool]:
        query = request.query

        def flag(*names: str) -> bool:
            return any(_truthy(query.get(name)) for name in names)

        stdin, stdout = flag("input", "stdin"), flag("output", "stdout")
        stderr, tty = flag("error", "stderr"), flag("tty")
        if tty:
            stderr = False  # one stream with a terminal, as upstream's kubelet does
        if not (stdin or stdout or stderr):
            raise errors.BadRequest("you must specify at least 1 of stdin, stdout, stderr")
        return stdin, stdout, stderr, tty

    async def exec(self, request: web.Request) -> web.StreamResponse:
        pod = self._pod(request)
        container = request.match_info["container"]
        command = request.query.getall("command", [])
        if not command:
            raise errors.BadRequest("you must specify at least one command for the container")
        stdin, stdout, stderr, tty = self._stdio(request)
        self._check_upgrade(request, EXEC_WEBSOCKET_PROTOCOLS)
        container_id = running_container_id(pod, container)
        url = await self.cri.exec(pb.ExecRequest(container_id=container_id, cmd=command,
                                                 tty=tty, stdin=stdin, stdout=stdout,
                                                 stderr=stderr))
        return await self._relay(request, url)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        pod = self._pod(request)
        container = request.match_info["container"]
        stdin, stdout, stderr, _ = self._stdio(request)
        # whether there is a terminal was fixed when the container started
        tty = bool((container_spec(pod, container) or {}).get("tty"))
        if tty:
            stderr = False
        self._check_upgrade(request, EXEC_WEBSOCKET_PROTOCOLS)
        container_id = running_container_id(pod, container)
        url = await self.cri.attach(pb.AttachRequest(container_id=container_id, stdin=stdin,
                                                     tty=tty, stdout=stdout, stderr=stderr))
        return await self._relay(request, url)

    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        pod = self._pod(request)
        ports = []
        for value in request.query.getall("port", []):
            for part in value.split(","):
                if not part.strip().isdigit() or not 0 < int(part) < 65536:
                    raise errors.BadRequest(f"invalid port {part!r}")
                ports.append(int(part))
        self._check_upgrade(request, PORT_FORWARD_WEBSOCKET_PROTOCOLS)
        sandbox_id = await self._sandbox_id(pod)
        url = await self.cri.port_forward(sandbox_id, ports)
        return await self._relay(request, url)

    async def _sandbox_id(self, pod: dict[str, Any]) -> str:
        """The pod's ready sandbox: through one of its containers, else by its uid label."""
        status = pod.get("status") or {}
        for entry in status.get("containerStatuses") or []:
            if entry.get("containerID") and (entry.get("state") or {}).get("running"):
                found = await self.cri.list_containers(
                    pb.ContainerFilter(id=runtime_id(entry["containerID"])))
                if found:
                    return found[0].pod_sandbox_id
        sandboxes = await self.cri.list_pod_sandbox(pb.PodSandboxFilter(
            state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY),
            label_selector={"io.kubernetes.pod.uid": pod["metadata"].get("uid", "")}))
        if not sandboxes:
            raise errors.BadRequest(f'pod "{pod["metadata"]["name"]}" has no running sandbox')
        return sandboxes[0].id


def tls_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext:
    # bearer-token callers come without a certificate
    return tls.server_context(cert, key, client_ca, require_client_cert=False)


async def serve(config: AgentConfig, cri: CriClient,
                pods: Callable[[], Iterable[dict[str, Any]]],
                ready: asyncio.Event | None = None, *, auth: KubeletAuth,
                host: str = "0.0.0.0") -> None:
    """Serve on `host:config.kubelet_port` until cancelled (all addresses by default, as
    upstream's kubelet), letting in whom `auth` allows."""
    app = KubeletServer(cri, pods, config.logs_dir, auth).app()
    context = tls_context(config.tls_cert, config.tls_key, config.client_ca)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, config.kubelet_port, ssl_context=context,
                           reuse_address=True)
        await site.start()
        log.info("kubelet server listening on https://%s:%d", host, config.kubelet_port)
        if ready is not None:
            ready.set()
        # a renewed certificate (or CA bundle) is served from the next connection on
        await tls.follow(context, config.tls_cert, config.tls_key, config.client_ca,
                         interval=config.certificate_check_interval)
    finally:
        await runner.cleanup()
