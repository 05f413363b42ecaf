"""The kubelet HTTPS server without containerd: who may call it, /healthz and /pods, logs from
a CRI log file, and the refusals that need no runtime. The CRI client is a stand-in answering
ContainerStatus only (exec, attach and port-forward against the real runtime are in
tests/e2e/test_streaming.py)."""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import ssl

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpclib.const import Status

from k8py.agent.config import AgentConfig
from k8py.agent.kubelet import server
from k8py.runtime import cri_pb2 as pb
from k8py.runtime.cri import NotFound
from k8py.server import pki


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def issue_client(certs: pki.PKI, directory: str, name: str, group: str) -> tuple[str, str]:
    with open(certs.ca_cert, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(certs.ca_key, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, group),
                                     x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, f"{name}.crt"), os.path.join(directory,
                                                                               f"{name}.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class StandInCri:
    """ContainerStatus for one exited container with a log file; NotFound otherwise."""

    def __init__(self, log_path: str):
        self.log_path = log_path

    async def container_status(self, container_id: str, verbose: bool = False):
        if container_id != "c1":
            raise NotFound(Status.NOT_FOUND, "not found")
        return pb.ContainerStatusResponse(status=pb.ContainerStatus(
            id="c1", state=pb.CONTAINER_EXITED, log_path=self.log_path))


POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
       "spec": {"containers": [{"name": "main", "image": "busybox"}]},
       "status": {"phase": "Running", "containerStatuses": [{
           "name": "main", "containerID": "containerd://c1", "restartCount": 0,
           "state": {"terminated": {"exitCode": 0, "containerID": "containerd://c1"}}}]}}


@pytest.fixture
async def kubelet(tmp_path):
    data_dir = str(tmp_path / "data")
    server_dir = os.path.join(data_dir, "server")
    os.makedirs(server_dir)
    certs = pki.ensure_pki(server_dir, cluster_domain="cluster.local", service_ip="10.43.0.1")
    cert, key = pki.ensure_kubelet_serving(certs, os.path.join(data_dir, "agent"), "n1",
                                           ("127.0.0.1",))
    log_path = str(tmp_path / "0.log")
    with open(log_path, "w") as f:
        f.write("2024-05-01T10:00:01.5Z stdout F one\n2024-05-01T10:00:02.5Z stderr F two\n")
    port = free_port()
    config = AgentConfig(data_dir=data_dir, kubelet_port=port, tls_cert=cert, tls_key=key,
                         client_ca=certs.ca_cert)
    ready = asyncio.Event()
    task = asyncio.create_task(server.serve(config, StandInCri(log_path), lambda: [POD], ready,
                                            host="127.0.0.1"))
    await asyncio.wait_for(ready.wait(), 10)

    def context(cert_key: tuple[str, str] | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=certs.ca_cert)
        if cert_key:
            ctx.load_cert_chain(*cert_key)
        return ctx

    masters = context(pki.ensure_kubelet_client(certs))
    nobody = context(issue_client(certs, str(tmp_path), "someone", "system:authenticated"))
    try:
        yield f"https://127.0.0.1:{port}", masters, nobody, context(None)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def get(url: str, context: ssl.SSLContext, headers=None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=context, headers=headers) as response:
            return response.status, await response.text()


async def test_only_system_masters_may_call(kubelet):
    base, masters, nobody, anonymous = kubelet
    assert await get(f"{base}/healthz", masters) == (200, "ok")
    assert (await get(f"{base}/healthz", nobody))[0] == 200
    status, body = await get(f"{base}/pods", nobody)
    assert status == 403 and '"reason": "Forbidden"' in body
    with pytest.raises(aiohttp.ClientError):
        await get(f"{base}/healthz", anonymous)
    status, body = await get(f"{base}/pods", masters)
    assert status == 200 and '"name": "web"' in body and '"kind": "PodList"' in body


async def test_container_logs(kubelet):
    base, masters, _, _ = kubelet
    logs = f"{base}/containerLogs/default/web/main"
    assert await get(logs, masters) == (200, "one\ntwo\n")
    assert await get(f"{logs}?tailLines=1&timestamps=true", masters) == (
        200, "2024-05-01T10:00:02.500000000Z two\n")
    assert await get(f"{logs}?follow=true&sinceTime=2024-05-01T10:00:02Z", masters) == (
        200, "two\n")  # the container exited: follow ends at once
    status, body = await get(f"{logs}?previous=true", masters)
    assert status == 400 and 'previous terminated container \\"main\\" in pod \\"web\\" not ' \
        'found' in body
    status, body = await get(f"{logs}?sinceSeconds=0", masters)
    assert status == 400 and "sinceSeconds" in body
    status, body = await get(f"{base}/containerLogs/default/nope/main", masters)
    assert status == 404 and 'pods \\"nope\\" not found' in body
    status, body = await get(f"{base}/containerLogs/default/web/other", masters)
    assert status == 400 and "container other is not valid for pod web" in body


async def test_streams_need_an_upgrade_the_runtime_speaks(kubelet):
    base, masters, _, _ = kubelet
    url = f"{base}/exec/default/web/main?command=true&output=1"
    status, body = await get(url, masters)
    assert status == 400 and "Upgrade request required" in body
    status, body = await get(url, masters, headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol": "v5.channel.k8s.io"})
    assert status == 400 and "retry over SPDY/3.1" in body
    status, body = await get(f"{base}/exec/default/web/main?output=1", masters)
    assert status == 400 and "at least one command" in body
    status, body = await get(f"{base}/exec/default/web/main?command=true", masters)
    assert status == 400 and "at least 1 of stdin, stdout, stderr" in body
