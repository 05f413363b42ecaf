"""The CRI v1 client: `CriClient` speaks runtime.v1 (RuntimeService and ImageService) to a
container runtime's unix socket over grpclib. No grpcio at run time.

Contract:
- Methods take and return `cri_pb2` messages (or the id/url/tuple the call is about), as the
  kubelet's CRI client does; the few convenience arguments (ids, a ref string) are named in
  each signature.
- Every call has a deadline: the client's `timeout` (upstream kubelet's
  `--runtime-request-timeout`, 2 minutes) unless the method is a quick read (`version`,
  `status`: `quick_timeout`) or takes its own (`exec_sync` gets its command timeout plus a
  margin).
- Every failure raises `CriError` (`.status`: a grpclib `Status`, `.message`): the
  runtime's own gRPC errors keep their status (`NotFound` for NOT_FOUND), a dead or missing
  socket is UNAVAILABLE, a deadline DEADLINE_EXCEEDED. Callers never see grpclib's or the
  socket's exceptions.
- Reconnecting is free: grpclib's `Channel` dials again on the next call once the
  connection is lost, so a containerd that restarted (same socket path) answers the next call.
  A read-only call that fails because the connection broke under it is retried once on a
  fresh connection; a mutating call is not (it may have happened), the caller decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from k8py.runtime import cri_pb2 as pb
from k8py.runtime.cri_grpc import ImageServiceStub, RuntimeServiceStub

DEFAULT_TIMEOUT = 120.0  # upstream's --runtime-request-timeout
QUICK_TIMEOUT = 10.0
EXEC_MARGIN = 10.0  # on top of an ExecSync command timeout

T = TypeVar("T")


class CriError(Exception):
    """A CRI call failed; `status` is the gRPC status, `message` the runtime's words."""

    def __init__(self, status: Status, message: str):
        super().__init__(f"{status.name}: {message}" if message else status.name)
        self.status = status
        self.message = message


class NotFound(CriError):
    """The sandbox, container or image does not exist."""


def endpoint_path(endpoint: str) -> str:
    """A runtime endpoint as a socket path: `unix:///run/x.sock` or a plain path."""
    if endpoint.startswith("unix://"):
        return endpoint[len("unix://"):]
    if "://" in endpoint:
        raise ValueError(f"{endpoint!r}: only unix:// runtime endpoints are supported")
    return endpoint


def error_from(exc: BaseException) -> CriError:
    """The CriError for a grpclib, socket or deadline failure."""
    if isinstance(exc, CriError):
        return exc
    if isinstance(exc, GRPCError):
        cls = NotFound if exc.status is Status.NOT_FOUND else CriError
        return cls(exc.status, exc.message or "")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return CriError(Status.DEADLINE_EXCEEDED, "the runtime did not answer in time")
    if isinstance(exc, StreamTerminatedError):
        return CriError(Status.UNAVAILABLE, f"connection to the runtime broke: {exc}")
    if isinstance(exc, OSError):
        return CriError(Status.UNAVAILABLE,
                        f"cannot reach the runtime: {exc.strerror or exc}")
    return CriError(Status.UNKNOWN, f"{type(exc).__name__}: {exc}")


class CriClient:
    """One connection to a CRI runtime socket; safe to share between tasks."""

    def __init__(self, socket_path: str, *, timeout: float = DEFAULT_TIMEOUT,
                 quick_timeout: float = QUICK_TIMEOUT):
        self.socket_path = endpoint_path(socket_path)
        self.timeout = timeout
        self.quick_timeout = quick_timeout
        self._channel: Channel | None = None
        self._runtime: RuntimeServiceStub | None = None
        self._images: ImageServiceStub | None = None

    def _stubs(self) -> tuple[RuntimeServiceStub, ImageServiceStub]:
        if self._channel is None:
            self._channel = Channel(path=self.socket_path)
            self._runtime = RuntimeServiceStub(self._channel)
            self._images = ImageServiceStub(self._channel)
        return self._runtime, self._images  # type: ignore[return-value]

    def _reset(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._runtime = self._images = None

    async def _call(self, call: Callable[[RuntimeServiceStub, ImageServiceStub], Awaitable[T]],
                    *, idempotent: bool = False) -> T:
        for attempt in (0, 1):
            try:
                return await call(*self._stubs())
            except (StreamTerminatedError, ConnectionError) as exc:
                self._reset()
                if not idempotent or attempt:
                    raise error_from(exc) from exc
            except (GRPCError, OSError, asyncio.TimeoutError) as exc:
                if isinstance(exc, OSError):
                    self._reset()
                raise error_from(exc) from exc
        raise AssertionError("unreachable")

    async def close(self) -> None:
        self._reset()

    async def __aenter__(self) -> CriClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # RuntimeService

    async def version(self) -> pb.VersionResponse:
        return await self._call(lambda r, i: r.Version(
            pb.VersionRequest(version="v1"), timeout=self.quick_timeout), idempotent=True)

    async def status(self, verbose: bool = False) -> pb.StatusResponse:
        return await self._call(lambda r, i: r.Status(
            pb.StatusRequest(verbose=verbose), timeout=self.quick_timeout), idempotent=True)

    async def run_pod_sandbox(self, config: pb.PodSandboxConfig,
                              runtime_handler: str = "") -> str:
        response = await self._call(lambda r, i: r.RunPodSandbox(
            pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler),
            timeout=self.timeout))
        return response.pod_sandbox_id

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        await self._call(lambda r, i: r.StopPodSandbox(
            pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=self.timeout),
            idempotent=True)

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        await self._call(lambda r, i: r.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=self.timeout),
            idempotent=True)

    async def pod_sandbox_status(self, sandbox_id: str,
                                 verbose: bool = False) -> pb.PodSandboxStatusResponse:
        return await self._call(lambda r, i: r.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=verbose),
            timeout=self.timeout), idempotent=True)

    async def list_pod_sandbox(self, filter: pb.PodSandboxFilter | None = None
                               ) -> list[pb.PodSandbox]:
        response = await self._call(lambda r, i: r.ListPodSandbox(
            pb.ListPodSandboxRequest(filter=filter), timeout=self.timeout), idempotent=True)
        return list(response.items)

    async def create_container(self, sandbox_id: str, config: pb.ContainerConfig,
                               sandbox_config: pb.PodSandboxConfig) -> str:
        response = await self._call(lambda r, i: r.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config,
                                      sandbox_config=sandbox_config),
            timeout=self.timeout))
        return response.container_id

    async def start_container(self, container_id: str) -> None:
        await self._call(lambda r, i: r.StartContainer(
            pb.StartContainerRequest(container_id=container_id), timeout=self.timeout))

    async def stop_container(self, container_id: str, timeout: int) -> None:
        """Signal the container, SIGKILL it after `timeout` seconds (the call's own
        deadline allows for that)."""
        await self._call(lambda r, i: r.StopContainer(
            pb.StopContainerRequest(container_id=container_id, timeout=timeout),
            timeout=self.timeout + max(timeout, 0)), idempotent=True)

    async def remove_container(self, container_id: str) -> None:
        await self._call(lambda r, i: r.RemoveContainer(
            pb.RemoveContainerRequest(container_id=container_id), timeout=self.timeout),
            idempotent=True)

    async def list_containers(self, filter: pb.ContainerFilter | None = None
                              ) -> list[pb.Container]:
        response = await self._call(lambda r, i: r.ListContainers(
            pb.ListContainersRequest(filter=filter), timeout=self.timeout), idempotent=True)
        return list(response.containers)

    async def container_status(self, container_id: str,
                               verbose: bool = False) -> pb.ContainerStatusResponse:
        return await self._call(lambda r, i: r.ContainerStatus(
            pb.ContainerStatusRequest(container_id=container_id, verbose=verbose),
            timeout=self.timeout), idempotent=True)

    async def update_container_resources(self, container_id: str,
                                         linux: pb.LinuxContainerResources) -> None:
        await self._call(lambda r, i: r.UpdateContainerResources(
            pb.UpdateContainerResourcesRequest(container_id=container_id, linux=linux),
            timeout=self.timeout))

    async def reopen_container_log(self, container_id: str) -> None:
        await self._call(lambda r, i: r.ReopenContainerLog(
            pb.ReopenContainerLogRequest(container_id=container_id), timeout=self.timeout))

    async def exec_sync(self, container_id: str, cmd: list[str],
                        timeout: float = 0) -> tuple[int, bytes, bytes]:
        """Run cmd in the container and wait: (exit code, stdout, stderr). timeout 0 means
        none on the runtime's side; the call's deadline is then the client's."""
        deadline = timeout + EXEC_MARGIN if timeout > 0 else self.timeout
        response = await self._call(lambda r, i: r.ExecSync(
            pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=int(timeout)),
            timeout=deadline))
        return response.exit_code, response.stdout, response.stderr

    async def exec(self, request: pb.ExecRequest) -> str:
        response = await self._call(lambda r, i: r.Exec(request, timeout=self.timeout))
        return response.url

    async def attach(self, request: pb.AttachRequest) -> str:
        response = await self._call(lambda r, i: r.Attach(request, timeout=self.timeout))
        return response.url

    async def port_forward(self, sandbox_id: str, ports: list[int]) -> str:
        response = await self._call(lambda r, i: r.PortForward(
            pb.PortForwardRequest(pod_sandbox_id=sandbox_id, port=ports),
            timeout=self.timeout))
        return response.url

    async def list_container_stats(self, filter: pb.ContainerStatsFilter | None = None
                                   ) -> list[pb.ContainerStats]:
        response = await self._call(lambda r, i: r.ListContainerStats(
            pb.ListContainerStatsRequest(filter=filter), timeout=self.timeout),
            idempotent=True)
        return list(response.stats)

    # ImageService

    async def list_images(self, filter: pb.ImageFilter | None = None) -> list[pb.Image]:
        response = await self._call(lambda r, i: i.ListImages(
            pb.ListImagesRequest(filter=filter), timeout=self.timeout), idempotent=True)
        return list(response.images)

    async def image_status(self, ref: str, verbose: bool = False) -> pb.Image | None:
        """The image, or None when the runtime does not have it (CRI answers an empty
        image rather than NOT_FOUND)."""
        response = await self._call(lambda r, i: i.ImageStatus(
            pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=verbose),
            timeout=self.timeout), idempotent=True)
        return response.image if response.HasField("image") and response.image.id else None

    async def pull_image(self, ref: str,
                         sandbox_config: pb.PodSandboxConfig | None = None) -> str:
        response = await self._call(lambda r, i: i.PullImage(
            pb.PullImageRequest(image=pb.ImageSpec(image=ref), sandbox_config=sandbox_config),
            timeout=self.timeout))
        return response.image_ref

    async def remove_image(self, ref: str) -> None:
        await self._call(lambda r, i: i.RemoveImage(
            pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)), timeout=self.timeout),
            idempotent=True)

    async def image_fs_info(self) -> pb.ImageFsInfoResponse:
        return await self._call(lambda r, i: i.ImageFsInfo(
            pb.ImageFsInfoRequest(), timeout=self.timeout), idempotent=True)
