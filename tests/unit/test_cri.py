"""CriClient's contract against a small grpclib CRI server on a unix socket in the test's loop:
the runtime's gRPC status survives (NOT_FOUND as NotFound), deadlines and a missing socket are
CriErrors, and a restarted server on the same socket is reached again by the same client."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

from k8py.runtime import cri_pb2 as pb
from k8py.runtime.cri import CriClient, CriError, NotFound, endpoint_path, error_from
from k8py.runtime.cri_grpc import ImageServiceBase, RuntimeServiceBase
from tests.conftest import eventually


class Runtime(RuntimeServiceBase):
    async def Version(self, stream):
        await stream.recv_message()
        await stream.send_message(pb.VersionResponse(runtime_name="fake", version="0.1.0"))

    async def ContainerStatus(self, stream):
        request = await stream.recv_message()
        raise GRPCError(Status.NOT_FOUND, f"container {request.container_id} not found")

    async def ExecSync(self, stream):
        request = await stream.recv_message()
        if request.cmd == ["sleep"]:
            await asyncio.sleep(10)
        await stream.send_message(pb.ExecSyncResponse(exit_code=7, stdout=b"out"))


class Images(ImageServiceBase):
    async def ImageStatus(self, stream):
        await stream.recv_message()
        await stream.send_message(pb.ImageStatusResponse())


for base in (RuntimeServiceBase, ImageServiceBase):
    for name in base.__abstractmethods__:
        target = Runtime if base is RuntimeServiceBase else Images
        if name not in target.__dict__:
            async def unimplemented(self, stream):
                raise GRPCError(Status.UNIMPLEMENTED)
            setattr(target, name, unimplemented)
    (Runtime if base is RuntimeServiceBase else Images).__abstractmethods__ = frozenset()


async def serve(path: str) -> Server:
    server = Server([Runtime(), Images()])
    await server.start(path=path)
    return server


async def stop(server: Server) -> None:
    server.close()
    await server.wait_closed()


async def test_calls_and_errors(tmp_path):
    path = str(tmp_path / "cri.sock")
    server = await serve(path)
    try:
        async with CriClient(f"unix://{path}", timeout=5) as cri:
            assert (await cri.version()).runtime_name == "fake"
            with pytest.raises(NotFound) as info:
                await cri.container_status("abc")
            assert info.value.status is Status.NOT_FOUND
            assert info.value.message == "container abc not found"
            assert await cri.image_status("k8py.local/none:1") is None
            with pytest.raises(CriError) as info:
                await cri.list_images()
            assert info.value.status is Status.UNIMPLEMENTED
            assert await cri.exec_sync("c", ["true"], timeout=0) == (7, b"out", b"")
    finally:
        await stop(server)


async def test_deadline(tmp_path):
    path = str(tmp_path / "cri.sock")
    server = await serve(path)
    try:
        async with CriClient(path, timeout=0.2) as cri:
            with pytest.raises(CriError) as info:
                await cri.exec_sync("c", ["sleep"])  # timeout 0: the client's 0.2 s
            assert info.value.status is Status.DEADLINE_EXCEEDED
    finally:
        await stop(server)


async def serve_in_process(path: str) -> asyncio.subprocess.Process:
    """The fake runtime in a child process, so it can die as containerd does (SIGKILL)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", f"import asyncio, tests.unit.test_cri as t; "
        f"asyncio.run(t.serve_forever({path!r}))")
    await eventually(lambda: os.path.exists(path) or proc.returncode is not None,
                     what="fake runtime listening")
    return proc


async def serve_forever(path: str) -> None:
    await serve(path)
    await asyncio.Event().wait()


async def test_missing_socket_and_reconnect_after_the_runtime_dies(tmp_path):
    path = str(tmp_path / "cri.sock")
    async with CriClient(path, timeout=5) as cri:
        with pytest.raises(CriError) as info:
            await cri.version()
        assert info.value.status is Status.UNAVAILABLE
        proc = await serve_in_process(path)
        try:
            assert (await cri.version()).runtime_name == "fake"
            proc.kill()
            await proc.wait()
            os.unlink(path)
            with pytest.raises(CriError) as info:
                await cri.version()
            assert info.value.status is Status.UNAVAILABLE
            proc = await serve_in_process(path)  # restarted on the same socket
            assert (await cri.version()).runtime_name == "fake"
            with pytest.raises(NotFound):
                await cri.container_status("abc")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def test_pure_parts():
    assert endpoint_path("unix:///run/containerd/containerd.sock") == (
        "/run/containerd/containerd.sock")
    assert endpoint_path("/x.sock") == "/x.sock"
    with pytest.raises(ValueError):
        endpoint_path("tcp://1.2.3.4:5")
    assert isinstance(error_from(GRPCError(Status.NOT_FOUND, "gone")), NotFound)
    assert error_from(FileNotFoundError(2, "No such file")).status is Status.UNAVAILABLE
    assert error_from(asyncio.TimeoutError()).status is Status.DEADLINE_EXCEEDED
