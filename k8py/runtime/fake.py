"""An in-memory container runtime with `CriClient`'s interface, for tests that run pod
lifecycles without root or containerd (the e2e tier stays on real containerd).

Sandboxes and containers are records with upstream's states and timestamps; a container's
"process" is its command, read as a tiny script so tests can say what it does:
- `exit N` anywhere in the command line: it exits with N (after `sleep S` if the line also
  says that);
- `sleep S` alone: it exits 0 after S seconds;
- anything else: it runs until stopped.
StopContainer ends a running container with 143 (SIGTERM; 137 when the timeout is 0), as a
shell would. Images are a set of refs (`images`); pulling one not in `pullable` fails with
NOT_FOUND, as a registry without it would. ExecSync answers `exec_results[cmd[0]]` (default
exit 0), which is how probes and hooks are scripted. Every call is recorded in `calls`.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterable

from grpclib.const import Status

from k8py.runtime import cri_pb2 as pb
from k8py.runtime.cri import CriError, NotFound

_EXIT = re.compile(r"\bexit\s+(\d+)")
_SLEEP = re.compile(r"\bsleep\s+(\d+(?:\.\d+)?)")


def _now() -> int:
    return time.time_ns()


class _Sandbox:
    def __init__(self, sandbox_id: str, config: pb.PodSandboxConfig, ip: str):
        self.id, self.config, self.ip = sandbox_id, config, ip
        self.state = pb.SANDBOX_READY
        self.created_at = _now()


class _Container:
    def __init__(self, container_id: str, sandbox_id: str, config: pb.ContainerConfig):
        self.id, self.sandbox_id, self.config = container_id, sandbox_id, config
        self.state = pb.CONTAINER_CREATED
        self.created_at = _now()
        self.started_at = self.finished_at = 0
        self.exit_code = 0
        self.reason = ""
        self.task: asyncio.Task | None = None


class FakeRuntime:
    """The CRI client's methods over in-memory sandboxes and containers."""

    def __init__(self, images: Iterable[str] = (), pullable: Iterable[str] = ()):
        self.images = set(images)
        self.pullable = set(pullable)
        self.exec_results: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.sandboxes: dict[str, _Sandbox] = {}
        self.containers: dict[str, _Container] = {}
        self._ids = itertools.count(1)
        self._ips = itertools.count(2)

    def _id(self, kind: str) -> str:
        return f"{kind}{next(self._ids):060d}"

    def _record(self, call: str, subject: str = "") -> None:
        self.calls.append((call, subject))

    def _container(self, container_id: str) -> _Container:
        container = self.containers.get(container_id)
        if container is None:
            raise NotFound(Status.NOT_FOUND, f"container {container_id!r} not found")
        return container

    # --- sandboxes -----------------------------------------------------------------------

    async def run_pod_sandbox(self, config: pb.PodSandboxConfig,
                              runtime_handler: str = "") -> str:
        sandbox = _Sandbox(self._id("s"), config, f"10.42.0.{next(self._ips) % 250 + 2}")
        self.sandboxes[sandbox.id] = sandbox
        self._record("RunPodSandbox", config.metadata.name)
        return sandbox.id

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self._record("StopPodSandbox", sandbox_id)
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            return
        for container in list(self.containers.values()):
            if container.sandbox_id == sandbox_id and container.state == pb.CONTAINER_RUNNING:
                self._finish(container, 137, "Error")
        sandbox.state = pb.SANDBOX_NOTREADY

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self._record("RemovePodSandbox", sandbox_id)
        await self.stop_pod_sandbox(sandbox_id)
        for container in [c for c in self.containers.values() if c.sandbox_id == sandbox_id]:
            del self.containers[container.id]
        self.sandboxes.pop(sandbox_id, None)

    async def pod_sandbox_status(self, sandbox_id: str,
                                 verbose: bool = False) -> pb.PodSandboxStatusResponse:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            raise NotFound(Status.NOT_FOUND, f"sandbox {sandbox_id!r} not found")
        return pb.PodSandboxStatusResponse(status=pb.PodSandboxStatus(
            id=sandbox.id, metadata=sandbox.config.metadata, state=sandbox.state,
            created_at=sandbox.created_at,
            network=pb.PodSandboxNetworkStatus(ip=sandbox.ip),
            labels=dict(sandbox.config.labels)))

    async def list_pod_sandbox(self, filter: pb.PodSandboxFilter | None = None
                               ) -> list[pb.PodSandbox]:
        wanted = dict(filter.label_selector) if filter is not None else {}
        return [pb.PodSandbox(id=s.id, metadata=s.config.metadata, state=s.state,
                              created_at=s.created_at, labels=dict(s.config.labels))
                for s in self.sandboxes.values()
                if all(s.config.labels.get(k) == v for k, v in wanted.items())]

    # --- containers ----------------------------------------------------------------------

    async def create_container(self, sandbox_id: str, config: pb.ContainerConfig,
                               sandbox_config: pb.PodSandboxConfig) -> str:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None or sandbox.state != pb.SANDBOX_READY:
            raise CriError(Status.FAILED_PRECONDITION, f"sandbox {sandbox_id!r} is not ready")
        if config.image.image not in self.images:
            raise CriError(Status.NOT_FOUND, f"image {config.image.image!r} not found")
        container = _Container(self._id("c"), sandbox_id, config)
        self.containers[container.id] = container
        self._record("CreateContainer", config.metadata.name)
        return container.id

    async def start_container(self, container_id: str) -> None:
        container = self._container(container_id)
        if container.state != pb.CONTAINER_CREATED:
            raise CriError(Status.FAILED_PRECONDITION, "container is not in created state")
        self._record("StartContainer", container.config.metadata.name)
        container.state = pb.CONTAINER_RUNNING
        container.started_at = _now()
        line = " ".join(list(container.config.command) + list(container.config.args))
        exit_code, sleep = _EXIT.search(line), _SLEEP.search(line)
        if exit_code is not None or sleep is not None:
            container.task = asyncio.create_task(self._run(
                container, int(exit_code.group(1)) if exit_code else 0,
                float(sleep.group(1)) if sleep else 0.0))

    async def _run(self, container: _Container, exit_code: int, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if container.state == pb.CONTAINER_RUNNING:
            self._finish(container, exit_code, "Completed" if exit_code == 0 else "Error")

    def _finish(self, container: _Container, exit_code: int, reason: str) -> None:
        container.state = pb.CONTAINER_EXITED
        container.finished_at = _now()
        container.exit_code, container.reason = exit_code, reason
        if container.task is not None and container.task is not asyncio.current_task():
            container.task.cancel()

    async def stop_container(self, container_id: str, timeout: int) -> None:
        container = self._container(container_id)
        self._record("StopContainer", container.config.metadata.name)
        if container.state == pb.CONTAINER_RUNNING:
            self._finish(container, 137 if timeout <= 0 else 143, "Error")

    async def remove_container(self, container_id: str) -> None:
        container = self.containers.pop(container_id, None)
        self._record("RemoveContainer", container.config.metadata.name if container else "")
        if container is not None and container.task is not None:
            container.task.cancel()

    async def list_containers(self, filter: pb.ContainerFilter | None = None
                              ) -> list[pb.Container]:
        wanted = dict(filter.label_selector) if filter is not None else {}
        return [pb.Container(id=c.id, pod_sandbox_id=c.sandbox_id, metadata=c.config.metadata,
                             image=c.config.image, image_ref=c.config.image.image,
                             state=c.state, created_at=c.created_at,
                             labels=dict(c.config.labels),
                             annotations=dict(c.config.annotations))
                for c in self.containers.values()
                if all(c.config.labels.get(k) == v for k, v in wanted.items())]

    async def container_status(self, container_id: str,
                               verbose: bool = False) -> pb.ContainerStatusResponse:
        c = self._container(container_id)
        return pb.ContainerStatusResponse(status=pb.ContainerStatus(
            id=c.id, metadata=c.config.metadata, state=c.state, created_at=c.created_at,
            started_at=c.started_at, finished_at=c.finished_at, exit_code=c.exit_code,
            image=c.config.image, image_ref=f"sha256:{abs(hash(c.config.image.image)):064x}"[:71],
            reason=c.reason, labels=dict(c.config.labels),
            annotations=dict(c.config.annotations), log_path=c.config.log_path))

    async def exec_sync(self, container_id: str, cmd: list[str],
                        timeout: float = 0) -> tuple[int, bytes, bytes]:
        container = self._container(container_id)
        if container.state != pb.CONTAINER_RUNNING:
            raise CriError(Status.UNKNOWN, "container is not running")
        self._record("ExecSync", " ".join(cmd))
        return self.exec_results.get(cmd[0] if cmd else "", 0), b"", b""

    # --- images --------------------------------------------------------------------------

    async def image_status(self, ref: str, verbose: bool = False) -> pb.Image | None:
        if ref not in self.images:
            return None
        return pb.Image(id=f"sha256:{abs(hash(ref)):064x}"[:71], repo_tags=[ref])

    async def pull_image(self, ref: str,
                         sandbox_config: pb.PodSandboxConfig | None = None) -> str:
        self._record("PullImage", ref)
        if ref not in self.pullable:
            raise CriError(Status.NOT_FOUND, f"failed to pull {ref!r}: not found")
        self.images.add(ref)
        return ref

    async def close(self) -> None:
        for container in self.containers.values():
            if container.task is not None:
                container.task.cancel()
