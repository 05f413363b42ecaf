"""Liveness, readiness and startup probes, and the lifecycle hooks that share their handlers.

`probe_once(...)` runs one exec (CRI ExecSync in the container), httpGet (aiohttp to the pod
IP; 200-399 is success) or tcpSocket (a connection opens) check within timeoutSeconds and
returns (success, message).

`ContainerProbes` holds the probes of one running container instance (one CRI container
id): a task per probe kind. Upstream semantics:

- the startup probe runs first; until it succeeds, liveness and readiness do not run, and
  `started` is False. failureThreshold failures of the startup or liveness probe ask the
  pod worker to kill the container (`kill_reason` is set and `on_change` called);
- readiness starts False (True at once for a container without a readiness probe) and
  flips after successThreshold successes / failureThreshold failures;
- each probe waits initialDelaySeconds, then runs every periodSeconds.

Results are kept per container id, so a restarted container starts from scratch. Failures
are reported through `on_unhealthy(kind, message)` (the Unhealthy Event).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from k8py.runtime.cri import CriError

log = logging.getLogger(__name__)

KINDS = ("startup", "liveness", "readiness")
PROBE_FIELDS = {"startup": "startupProbe", "liveness": "livenessProbe",
                "readiness": "readinessProbe"}


def resolve_port(port: Any, container: dict[str, Any]) -> int:
    """A probe's port: a number or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ValueError(f"port {port!r} is not a port of container {container.get('name')}")


async def http_get(action: dict[str, Any], container: dict[str, Any], pod_ip: str,
                   timeout: float) -> tuple[bool, str]:
    import aiohttp  # loaded only by nodes with HTTP probes or hooks

    scheme = (action.get("scheme") or "HTTP").lower()
    host = action.get("host") or pod_ip
    port = resolve_port(action.get("port"), container)
    path = action.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    if ":" in host:
        host = f"[{host}]"
    url = f"{scheme}://{host}:{port}{path}"
    headers = {"User-Agent": "kube-probe/1.32"}
    for header in action.get("httpHeaders") or []:
        headers[header["name"]] = header.get("value", "")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(url, headers=headers, ssl=False, allow_redirects=True) as resp:
                body = (await resp.content.read(10 * 1024)).decode(errors="replace")
                if 200 <= resp.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {resp.status}" + \
                    (f" {body.strip()[:200]}" if body.strip() else "")
    except asyncio.TimeoutError:
        return False, (f'Get "{url}": context deadline exceeded (Client.Timeout exceeded '
                       "while awaiting headers)")
    except aiohttp.ClientError as exc:
        return False, f'Get "{url}": {exc}'


async def tcp_socket(action: dict[str, Any], container: dict[str, Any], pod_ip: str,
                     timeout: float) -> tuple[bool, str]:
    host = action.get("host") or pod_ip
    port = resolve_port(action.get("port"), container)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except asyncio.TimeoutError:
        return False, f"dial tcp {host}:{port}: i/o timeout"
    except OSError as exc:
        return False, f"dial tcp {host}:{port}: connect: {exc.strerror or exc}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True, ""


async def exec_command(cri, container_id: str, command: list[str],
                       timeout: float) -> tuple[bool, str]:
    try:
        code, stdout, stderr = await cri.exec_sync(container_id, command, timeout)
    except CriError as exc:
        if "timeout" in exc.message.lower() or exc.status.name == "DEADLINE_EXCEEDED":
            return False, f"command {command!r} timed out"
        return False, exc.message
    if code == 0:
        return True, ""
    output = (stdout + stderr).decode(errors="replace").strip()
    return False, output or f"command {command!r} exited with {code}"


async def run_handler(cri, handler: dict[str, Any], container: dict[str, Any],
                      container_id: str, pod_ip: str, timeout: float) -> tuple[bool, str]:
    """A probe or lifecycle handler: exec, httpGet, tcpSocket, or sleep."""
    try:
        if "exec" in handler:
            return await exec_command(cri, container_id,
                                      list((handler["exec"] or {}).get("command") or []),
                                      timeout)
        if "httpGet" in handler:
            return await http_get(handler["httpGet"], container, pod_ip, timeout)
        if "tcpSocket" in handler:
            return await tcp_socket(handler["tcpSocket"], container, pod_ip, timeout)
        if "sleep" in handler:
            await asyncio.sleep(min(float(handler["sleep"].get("seconds", 0)), timeout))
            return True, ""
    except ValueError as exc:
        return False, str(exc)
    return False, "probe handler not supported by k8py (exec, httpGet, tcpSocket)"


class Threshold:
    """Counts consecutive results; the result flips after successThreshold successes or
    failureThreshold failures (pure, unit tested)."""

    def __init__(self, initial: bool, success_threshold: int, failure_threshold: int):
        self.result = initial
        self.success_threshold = max(1, success_threshold)
        self.failure_threshold = max(1, failure_threshold)
        self._successes = self._failures = 0

    def record(self, ok: bool) -> bool:
        """Record one probe; True when the result changed."""
        if ok:
            self._successes += 1
            self._failures = 0
            if not self.result and self._successes >= self.success_threshold:
                self.result = True
                return True
        else:
            self._failures += 1
            self._successes = 0
            if self.result and self._failures >= self.failure_threshold:
                self.result = False
                return True
            if not self.result and self._failures == self.failure_threshold:
                return True  # still failing, but the threshold was just reached
        return False


class ContainerProbes:
    def __init__(self, cri, container: dict[str, Any], container_id: str,
                 pod_ip: Callable[[], str], on_change: Callable[[], None],
                 on_unhealthy: Callable[[str, str], Awaitable[None]],
                 adopted_ready: bool | None = None):
        self.cri = cri
        self.container = container
        self.container_id = container_id
        self.pod_ip = pod_ip
        self.on_change = on_change
        self.on_unhealthy = on_unhealthy
        self.probes = {kind: container.get(PROBE_FIELDS[kind]) for kind in KINDS}
        self.started = self.probes["startup"] is None
        self.ready = self.probes["readiness"] is None and self.started
        if adopted_ready:  # a running container the agent adopted after a restart
            self.started = self.ready = True
        self.kill_reason: str | None = None
        self._tasks: list[asyncio.Task] = []
        self._started_event = asyncio.Event()
        if self.started:
            self._started_event.set()

    @property
    def has_readiness(self) -> bool:
        return self.probes["readiness"] is not None

    def start(self) -> None:
        for kind in KINDS:
            if self.probes[kind] is not None:
                self._tasks.append(asyncio.create_task(self._run(kind, self.probes[kind])))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _run(self, kind: str, probe: dict[str, Any]) -> None:
        if kind != "startup":
            await self._started_event.wait()
        await asyncio.sleep(float(probe.get("initialDelaySeconds") or 0))
        period = max(1.0, float(probe.get("periodSeconds") or 10))
        timeout = max(1.0, float(probe.get("timeoutSeconds") or 1))
        threshold = Threshold(kind == "liveness" or (kind == "readiness" and self.ready),
                              int(probe.get("successThreshold") or 1) if kind == "readiness"
                              else 1, int(probe.get("failureThreshold") or 3))
        while True:
            ok, message = await run_handler(self.cri, probe, self.container,
                                            self.container_id, self.pod_ip(), timeout)
            flipped = threshold.record(ok)
            if not ok:
                await self.on_unhealthy(kind, message)
            if kind == "startup":
                if ok:
                    self.started = True
                    self.ready = self.probes["readiness"] is None
                    self._started_event.set()
                    self.on_change()
                    return
                if flipped:
                    self.kill_reason = f"Container {self.container['name']} failed startup " \
                                       "probe, will be restarted"
                    self.on_change()
                    return
            elif kind == "liveness":
                if flipped and not threshold.result:
                    self.kill_reason = f"Container {self.container['name']} failed liveness " \
                                       "probe, will be restarted"
                    self.on_change()
                    return
            elif flipped and self.ready != threshold.result:
                self.ready = threshold.result
                self.on_change()
            await asyncio.sleep(period)
