"""The built-in ingress controller against a real API server and real aiohttp backends on
loopback: host and path routing over two Ingresses, TLS by SNI from a Secret, a WebSocket
passed through, and an Ingress change applied on an open keep-alive connection. The
controller runs as a node (`system:node:<name>`) and reads TLS Secrets as the service account
`kube-system/k8py-ingress`, so the bootstrap RBAC is what lets it work; the node itself may
still not read those Secrets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ssl

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.net.ingress import IngressController
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver import inprocess
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server import daemon
from tests.integration.inloop import running_apiserver

SERVICES = builtin("v1", "services")
SLICES = builtin("discovery.k8s.io/v1", "endpointslices")
INGRESSES = builtin("networking.k8s.io/v1", "ingresses")
SECRETS = builtin("v1", "secrets")


async def until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def backend_app(name: str) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({
            "backend": name, "path": request.path_qs, "host": request.headers.get("Host"),
            "xff": request.headers.get("X-Forwarded-For"),
            "proto": request.headers.get("X-Forwarded-Proto"),
            "xhost": request.headers.get("X-Forwarded-Host")})

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"{name}:{message.data}")
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        return ws

    app = web.Application()
    app.router.add_get("/ws", socket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@contextlib.asynccontextmanager
async def backends(*names: str):
    runners, ports = [], {}
    for name in names:
        runner = web.AppRunner(backend_app(name), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        ports[name] = site._server.sockets[0].getsockname()[1]
    try:
        yield ports
    finally:
        for runner in runners:
            await runner.cleanup()


def certificate(host: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def path(p: str, service: str, kind: str = "Prefix") -> dict:
    return {"path": p, "pathType": kind,
            "backend": {"service": {"name": service, "port": {"number": 80}}}}


async def make_service(admin: Client, name: str, port: int) -> None:
    await admin.create(SERVICES, {"metadata": {"name": name}, "spec": {
        "ports": [{"name": "http", "port": 80, "targetPort": port}]}}, "default")
    await admin.create(SLICES, {
        "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]},
        "default")


async def http_get(reader, writer, host: str, target: str) -> tuple[int, bytes]:
    """One request on an open connection; the response read by its Content-Length."""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines
                  if line.lower().startswith("content-length:"))
    return int(lines[0].split()[1]), await reader.readexactly(length)


@pytest.fixture
async def cluster(tmp_path):
    async with running_apiserver(tmp_path) as server, backends("a", "b", "c") as ports:
        rest = server.app[apiserver.REST_KEY]
        admin = Client(InProcessTransport(rest))
        # the packaged ingress add-on: the default IngressClass
        await admin.create(builtin("networking.k8s.io/v1", "ingressclasses"),
                           dict(daemon.INGRESS_CLASS))
        node = Client(InProcessTransport(rest, "k8py-kubelet", inprocess.node("node-1")))
        for name, port in ports.items():
            await make_service(admin, name, port)
        secrets = Client(InProcessTransport(rest, "k8py-ingress",
                                            inprocess.controller("k8py-ingress")))
        controller = IngressController(node, http_port=0, https_port=0, address="127.0.0.1",
                                       secrets_client=secrets)
        task = asyncio.create_task(controller.run())
        await until(lambda: len(controller.bound) == 2)
        try:
            yield admin, controller
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            for client in (admin, node, secrets):
                await client.close()


async def settled(controller: IngressController, check) -> None:
    await until(lambda: check(controller.table))


async def test_routing_tls_websocket_and_live_change(cluster):
    admin, controller = cluster
    await admin.create(INGRESSES, {"metadata": {"name": "web"}, "spec": {
        "rules": [{"host": "web.example.com", "http": {"paths": [
            path("/", "a"), path("/api", "b"), path("/api/exact", "c", "Exact")]}}]}},
        "default")
    cert, key = certificate("secure.example.com")
    await admin.create(SECRETS, {"metadata": {"name": "secure-tls"},
                                 "type": "kubernetes.io/tls",
                                 "data": {"tls.crt": base64.b64encode(cert).decode(),
                                          "tls.key": base64.b64encode(key).decode()}},
                       "default")
    await admin.create(INGRESSES, {"metadata": {"name": "other"}, "spec": {
        "ingressClassName": "k8py",
        "tls": [{"hosts": ["secure.example.com"], "secretName": "secure-tls"}],
        "rules": [{"host": "*.apps.example.com", "http": {"paths": [path("/", "c")]}},
                  {"host": "secure.example.com", "http": {"paths": [path("/", "b")]}}]}},
        "default")
    await settled(controller, lambda t: "*.apps.example.com" in t.hosts
                  and "default/secure-tls" in controller.contexts)
    with pytest.raises(errors.Forbidden):
        await controller.ingresses.client.get(SECRETS, "secure-tls", "default")
    http = f"http://127.0.0.1:{controller.bound['http']}"
    async with aiohttp.ClientSession() as session:
        async def get(host, target):
            async with session.get(http + target, headers={"Host": host}) as response:
                return response.status, (await response.json() if response.status == 200
                                         else None)

        status, body = await get("web.example.com", "/index.html?x=1")
        assert (status, body["backend"], body["path"]) == (200, "a", "/index.html?x=1")
        assert body["host"] == "web.example.com" and body["xff"] == "127.0.0.1"
        assert body["proto"] == "http" and body["xhost"] == "web.example.com"
        assert (await get("web.example.com", "/api/v1"))[1]["backend"] == "b"
        assert (await get("web.example.com", "/api/exact"))[1]["backend"] == "c"
        assert (await get("web.example.com", "/apiary"))[1]["backend"] == "a"
        assert (await get("x.apps.example.com", "/"))[1]["backend"] == "c"
        assert (await get("nowhere.example.com", "/"))[0] == 404

        # a WebSocket through the ingress, its subprotocol and both message kinds
        async with session.ws_connect(f"{http}/ws", headers={"Host": "web.example.com"},
                                      protocols=("chat",)) as ws:
            assert ws.protocol == "chat"
            await ws.send_str("hello")
            assert await ws.receive_str() == "a:hello"
            await ws.send_bytes(b"abc")
            assert await ws.receive_bytes() == b"cba"

    # TLS: the Secret's certificate for its host (by SNI), the fallback for another name
    trusted = ssl.create_default_context(cadata=cert.decode())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", controller.bound["https"], ssl=trusted,
        server_hostname="secure.example.com")
    status, body = await http_get(reader, writer, "secure.example.com", "/")
    assert status == 200 and b'"backend": "b"' in body and b'"proto": "https"' in body
    writer.close()
    loose = ssl.create_default_context()
    loose.check_hostname, loose.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", controller.bound["https"], ssl=loose, server_hostname="x.apps.example.com")
    peer = x509.load_der_x509_certificate(
        writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
    assert "K8PY INGRESS DEFAULT" in peer.subject.rfc4514_string()
    writer.close()

    # an Ingress change, on a keep-alive connection opened before it
    reader, writer = await asyncio.open_connection("127.0.0.1", controller.bound["http"])
    status, body = await http_get(reader, writer, "web.example.com", "/")
    assert status == 200 and b'"backend": "a"' in body
    generation = controller.generation
    await admin.patch(INGRESSES, "web", {"spec": {"rules": [{"host": "web.example.com",
                                                              "http": {"paths": [
                                                                  path("/", "c")]}}]}},
                      "default")
    await until(lambda: controller.generation > generation
                and controller.table.route("web.example.com", "/").name.startswith(
                    "default/c:"))
    status, body = await http_get(reader, writer, "web.example.com", "/")
    assert status == 200 and b'"backend": "c"' in body
    writer.close()


async def test_unready_backend_and_default_backend(cluster):
    admin, controller = cluster
    await admin.create(SERVICES, {"metadata": {"name": "empty"}, "spec": {
        "ports": [{"name": "http", "port": 80}]}}, "default")
    await admin.create(INGRESSES, {"metadata": {"name": "fallback"}, "spec": {
        "defaultBackend": {"service": {"name": "b", "port": {"name": "http"}}},
        "rules": [{"host": "down.example.com", "http": {"paths": [path("/", "empty")]}}]}},
        "default")
    await settled(controller, lambda t: t.default is not None)
    http = f"http://127.0.0.1:{controller.bound['http']}"
    async with aiohttp.ClientSession() as session:
        async with session.get(http + "/", headers={"Host": "down.example.com"}) as response:
            assert response.status == 503
        async with session.get(http + "/x", headers={"Host": "any.example.com"}) as response:
            assert response.status == 200 and (await response.json())["backend"] == "b"
