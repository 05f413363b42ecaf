"""The kubelet HTTPS server without containerd: who may call it (client certificates and
bearer tokens, authenticated and authorized through a real API server's TokenReview and
SubjectAccessReview), /healthz and /pods, logs from a CRI log file, and the refusals that
need no runtime, stats and metrics. The CRI client is a stand-in answering ContainerStatus,
ListContainers and ListContainerStats (exec, attach and port-forward against the real
runtime are in tests/e2e/test_streaming.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import dataclasses
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
from prometheus_client.parser import text_string_to_metric_families

from k8py.agent.config import AgentConfig
from k8py.agent.kubelet import server
from k8py.agent.kubelet.auth import KubeletAuth
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from k8py.runtime import cri_pb2 as pb
from k8py.runtime.cri import NotFound
from k8py.server import pki
from tests.integration.inloop import running_apiserver

SERVICE_ACCOUNTS = builtin("v1", "serviceaccounts")


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

    async def list_containers(self, filter=None):
        return [pb.Container(id="c1", created_at=1_700_000_000 * 10**9)]

    async def list_container_stats(self, filter=None):
        now = 1_700_000_100 * 10**9
        return [pb.ContainerStats(
            attributes=pb.ContainerAttributes(
                id="c1", metadata=pb.ContainerMetadata(name="main"),
                labels={"io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace":
                        "default", "io.kubernetes.container.name": "main"}),
            cpu=pb.CpuUsage(timestamp=now, usage_core_nano_seconds=pb.UInt64Value(
                value=2_500_000_000), usage_nano_cores=pb.UInt64Value(value=250_000_000)),
            memory=pb.MemoryUsage(timestamp=now, working_set_bytes=pb.UInt64Value(
                value=12 << 20)))]


POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
       "spec": {"containers": [{"name": "main", "image": "busybox"}]},
       "status": {"phase": "Running", "containerStatuses": [{
           "name": "main", "containerID": "containerd://c1", "restartCount": 0,
           "state": {"terminated": {"exitCode": 0, "containerID": "containerd://c1"}}}]}}


class Clock:
    """Monotonic time the test moves forward (the auth caches' clock)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingTransport:
    """The kubelet's real HTTPS transport, counting the reviews it sends (the caches'
    witness)."""

    def __init__(self, transport: HttpTransport, counts: dict[str, int]):
        self.transport, self.counts = transport, counts

    async def call(self, method, ref, **kwargs):
        self.counts[ref.resource.plural] = self.counts.get(ref.resource.plural, 0) + 1
        return await self.transport.call(method, ref, **kwargs)

    async def close(self) -> None:
        await self.transport.close()


@dataclasses.dataclass
class Kubelet:
    base: str
    masters: ssl.SSLContext  # the API server's kubelet client certificate
    nobody: ssl.SSLContext  # a CA-signed certificate nobody granted anything
    anonymous: ssl.SSLContext  # no certificate
    api: Client  # admin, towards the API server
    clock: Clock
    reviews: dict[str, int]  # reviews the kubelet asked the API server for, by plural


@pytest.fixture
async def kubelet(tmp_path):
    """A real API server, and a kubelet server that asks it about its callers with its
    own HTTPS client (the admin kubeconfig here; a node's credentials in a cluster)."""
    async with running_apiserver(tmp_path) as api_server:
        certs = api_server.certs
        data_dir = api_server.data_dir
        cert, key = pki.ensure_kubelet_serving(certs, os.path.join(data_dir, "agent"), "n1",
                                               ("127.0.0.1",))
        kubeconfig = str(tmp_path / "kubelet.kubeconfig")
        pki.write_kubeconfig(certs, kubeconfig, api_server.url, 0o600)
        reviews: dict[str, int] = {}
        kubelet_client = Client(CountingTransport(HttpTransport.from_kubeconfig(kubeconfig),
                                                  reviews))
        admin = Client(HttpTransport.from_kubeconfig(kubeconfig))
        log_path = str(tmp_path / "0.log")
        with open(log_path, "w") as f:
            f.write("2024-05-01T10:00:01.5Z stdout F one\n2024-05-01T10:00:02.5Z stderr F two\n")
        port = free_port()
        config = AgentConfig(data_dir=data_dir, kubelet_port=port, tls_cert=cert, tls_key=key,
                             client_ca=certs.ca_cert)
        clock = Clock()
        ready = asyncio.Event()
        task = asyncio.create_task(server.serve(
            config, StandInCri(log_path), lambda: [POD], ready, host="127.0.0.1",
            auth=KubeletAuth(kubelet_client, "n1", clock=clock)))
        await asyncio.wait_for(ready.wait(), 10)

        def context(cert_key: tuple[str, str] | None) -> ssl.SSLContext:
            ctx = ssl.create_default_context(cafile=certs.ca_cert)
            if cert_key:
                ctx.load_cert_chain(*cert_key)
            return ctx

        try:
            yield Kubelet(f"https://127.0.0.1:{port}", context(pki.ensure_kubelet_client(certs)),
                          context(issue_client(certs, str(tmp_path), "someone", "team")),
                          context(None), admin, clock, reviews)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await kubelet_client.close()
            await admin.close()


async def get(url: str, context: ssl.SSLContext, headers=None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, ssl=context, headers=headers) as response:
            return response.status, await response.text()


async def service_account_token(api: Client, name: str) -> str:
    await api.create(SERVICE_ACCOUNTS, {"metadata": {"name": name, "namespace": "default"}})
    review = await api.create_subresource(SERVICE_ACCOUNTS, name, "default", "token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    return review["status"]["token"]


async def test_anonymous_and_bad_tokens_are_unauthorized(kubelet):
    for path in ("/healthz", "/pods", "/containerLogs/default/web/main", "/nothing"):
        assert await get(kubelet.base + path, kubelet.anonymous) == (401, "Unauthorized")
    assert await get(f"{kubelet.base}/pods", kubelet.anonymous, headers={
        "Authorization": "Bearer not-a-token"}) == (401, "Unauthorized")


async def test_certificate_callers(kubelet):
    assert await get(f"{kubelet.base}/healthz", kubelet.masters) == (200, "ok")
    status, body = await get(f"{kubelet.base}/pods", kubelet.masters)
    assert status == 200 and '"name": "web"' in body and '"kind": "PodList"' in body


async def grant_kubelet_api(api: Client, account: str) -> None:
    """Bind the account to system:kubelet-api-admin, and wait until RBAC says so."""
    await api.create(builtin("rbac.authorization.k8s.io/v1", "clusterrolebindings"), {
        "metadata": {"name": f"{account}-kubelet-api"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:kubelet-api-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "default"}]})
    reviews = builtin("authorization.k8s.io/v1", "subjectaccessreviews")
    for _ in range(200):
        answer = await api.create(reviews, {"spec": {
            "user": f"system:serviceaccount:default:{account}",
            "resourceAttributes": {"verb": "get", "resource": "nodes",
                                   "subresource": "proxy"}}})
        if answer["status"]["allowed"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the binding never took effect")


async def test_bearer_token_through_token_review_and_the_caches(kubelet):
    token = await service_account_token(kubelet.api, "viewer")
    await grant_kubelet_api(kubelet.api, "viewer")
    bearer = {"Authorization": f"Bearer {token}"}
    status, body = await get(f"{kubelet.base}/pods", kubelet.anonymous, headers=bearer)
    assert status == 200 and '"kind": "PodList"' in body
    assert kubelet.reviews == {"tokenreviews": 1, "subjectaccessreviews": 1}
    # answers are kept: a TokenReview for 2 minutes, an allowed decision for 5
    assert (await get(f"{kubelet.base}/pods", kubelet.anonymous, headers=bearer))[0] == 200
    assert kubelet.reviews == {"tokenreviews": 1, "subjectaccessreviews": 1}
    kubelet.clock.now += 121
    assert (await get(f"{kubelet.base}/pods", kubelet.anonymous, headers=bearer))[0] == 200
    assert kubelet.reviews == {"tokenreviews": 2, "subjectaccessreviews": 1}
    kubelet.clock.now += 180  # 301 s after the decision, 180 after the second review
    assert (await get(f"{kubelet.base}/pods", kubelet.anonymous, headers=bearer))[0] == 200
    assert kubelet.reviews == {"tokenreviews": 3, "subjectaccessreviews": 2}
    # the token sent as a WebSocket subprotocol, as a browser would
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    status, _ = await get(f"{kubelet.base}/healthz", kubelet.anonymous, headers={
        "Sec-WebSocket-Protocol": f"base64url.bearer.authorization.k8s.io.{encoded}"})
    assert status == 200


async def test_unbound_callers_are_forbidden(kubelet):
    """A user nothing grants `nodes/proxy` gets upstream's 403 text (certificate and token
    alike); depends on SubjectAccessReview answering from RBAC."""
    assert await get(f"{kubelet.base}/pods", kubelet.nobody) == (
        403, "Forbidden (user=someone, verb=get, resource=nodes, "
             "subresource(s)=[pods proxy])\n")
    token = await service_account_token(kubelet.api, "unbound")
    status, body = await get(f"{kubelet.base}/containerLogs/default/web/main",
                             kubelet.anonymous, headers={"Authorization": f"Bearer {token}"})
    assert (status, body) == (403, "Forbidden (user=system:serviceaccount:default:unbound, "
                                   "verb=get, resource=nodes, subresource(s)=[proxy])\n")


async def test_container_logs(kubelet):
    base, masters = kubelet.base, kubelet.masters
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
    base, masters = kubelet.base, kubelet.masters
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


async def test_stats_summary_and_resource_metrics(kubelet):
    status, body = await get(f"{kubelet.base}/stats/summary", kubelet.masters)
    assert status == 200
    summary = json.loads(body)
    assert summary["node"]["nodeName"] == "n1"
    assert summary["node"]["memory"]["workingSetBytes"] > 0
    [pod] = summary["pods"]
    assert pod["podRef"] == {"name": "web", "namespace": "default", "uid": "u1"}
    assert pod["cpu"]["usageNanoCores"] == 250_000_000
    assert pod["containers"][0]["memory"]["workingSetBytes"] == 12 << 20
    assert pod["containers"][0]["startTime"] == "2023-11-14T22:13:20Z"
    status, text = await get(f"{kubelet.base}/metrics/resource", kubelet.masters)
    assert status == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s for f in
               text_string_to_metric_families(text) for s in f.samples}
    cpu = samples[("container_cpu_usage_seconds_total",
                   (("container", "main"), ("namespace", "default"), ("pod", "web")))]
    assert cpu.value == 2.5 and cpu.timestamp == 1_700_000_100
    assert samples[("pod_memory_working_set_bytes",
                    (("namespace", "default"), ("pod", "web")))].value == 12 << 20
    assert samples[("node_cpu_usage_seconds_total", ())].value > 0
    assert samples[("scrape_error", ())].value == 0
    status, text = await get(f"{kubelet.base}/metrics", kubelet.masters)
    assert status == 200 and "process_resident_memory_bytes" in text


async def test_stats_and_metrics_need_their_subresources(kubelet):
    assert await get(f"{kubelet.base}/stats/summary", kubelet.nobody) == (
        403, "Forbidden (user=someone, verb=get, resource=nodes, subresource(s)=[stats])\n")
    assert await get(f"{kubelet.base}/metrics/resource", kubelet.nobody) == (
        403, "Forbidden (user=someone, verb=get, resource=nodes, subresource(s)=[metrics])\n")
    assert (await get(f"{kubelet.base}/metrics/resource", kubelet.anonymous))[0] == 401
