"""The built-in ingress on `k8py lab` (a server and two joined agents), from the host: two
Ingresses with host and path rules route to the right Services on every node's address; TLS
from a Secret answers with that certificate for its host (SNI) on every node, joined agents
included (they read the Secret with the `k8py-ingress` token bound to their Node); a WebSocket
passes through; an Ingress changed while a keep-alive connection and a WebSocket are open
takes effect on them without dropping either; the Ingresses' status lists the three nodes.

The pods' image is busybox (httpd, no WebSocket server), so the WebSocket backend is a tiny
aiohttp echo server the test runs in agent-1's network namespace (outside the pod network),
reached through a Service without a selector and its own EndpointSlice, as the UDP check of
test_lab does."""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys

import pytest

from tests.conftest import wait_for
from tests.e2e.labcluster import LabCluster

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("containerd")
                       or not os.path.exists("/usr/lib/cni/bridge"),
                       reason="needs root, containerd and the CNI plugins"),
]

NODES = ("server", "agent-1", "agent-2")
# serves its hostname at / and at /api/
WEB = ("mkdir -p /www/api && hostname > /www/index.html && hostname > /www/api/index.html "
       "&& httpd -f -p 8080 -h /www")
WS_PORT = 18765
WS_ECHO = f"""
from aiohttp import web
async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str("echo:" + message.data)
    return ws
app = web.Application()
app.router.add_get("/ws", echo)
web.run_app(app, host="0.0.0.0", port={WS_PORT}, print=None, access_log=None)
"""


def certificate(host: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def rule(host: str, *paths: tuple[str, str]) -> dict:
    return {"host": host, "http": {"paths": [
        {"path": path, "pathType": "Prefix",
         "backend": {"service": {"name": service, "port": {"number": 80}}}}
        for path, service in paths]}}


def apply(lab: LabCluster, *objects: dict) -> None:
    lab.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def get(address: str, host: str, path: str = "/index.html") -> str:
    connection = http.client.HTTPConnection(address, 80, timeout=3)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.read().decode().strip() if response.status == 200 else ""
    except OSError:
        return ""
    finally:
        connection.close()


def served_certificate(address: str, host: str) -> bytes | None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # compared below
    try:
        with socket.create_connection((address, 443), timeout=3) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True)
    except OSError:
        return None


@pytest.fixture(scope="module")
def ingress_lab(lab):
    for name, node in (("ing-a", "agent-1"), ("ing-b", "agent-2")):
        lab.pod(name, node, WEB, {"app": name})
    lab.running("ing-a", "ing-b")
    cert, key = certificate("b.example.test")
    apply(lab, *[{"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                  "spec": {"selector": {"app": name},
                           "ports": [{"port": 80, "targetPort": 8080}]}}
                 for name in ("ing-a", "ing-b")],
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b-tls"},
           "type": "kubernetes.io/tls", "data": {"tls.crt": base64.b64encode(cert).decode(),
                                                 "tls.key": base64.b64encode(key).decode()}},
          # no ingressClassName: DefaultIngressClass gives them the packaged class k8py
          {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "site"},
           "spec": {"rules": [rule("a.example.test", ("/", "ing-a"), ("/api", "ing-b"))]}},
          {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "other"},
           "spec": {"tls": [{"hosts": ["b.example.test"], "secretName": "b-tls"}],
                    "rules": [rule("b.example.test", ("/", "ing-b"))]}})
    addresses = {node: lab.node_ip(node) for node in NODES}
    yield lab, addresses, cert


def test_host_and_path_rules_on_every_node(ingress_lab):
    lab, addresses, _ = ingress_lab
    site = json.loads(lab.kubectl("get", "ingress", "site", "-o", "json").stdout)
    assert site["spec"]["ingressClassName"] == "k8py"
    for node, address in addresses.items():
        for host, path, wanted in (("a.example.test", "/index.html", "ing-a"),
                                   ("a.example.test", "/api/index.html", "ing-b"),
                                   ("b.example.test", "/index.html", "ing-b")):
            wait_for(lambda: get(address, host, path) == wanted, timeout=60, interval=0.5,
                     what=f"{host}{path} on {node} ({address}) answered by {wanted}")

    def status():
        other = json.loads(lab.kubectl("get", "ingress", "other", "-o", "json").stdout)
        return sorted(i["ip"] for i in ((other.get("status") or {}).get("loadBalancer")
                                        or {}).get("ingress") or [])
    wait_for(lambda: status() == sorted(addresses.values()), timeout=30, interval=0.5,
             what="the Ingress's status listing the three nodes")
    shown = lab.kubectl("get", "ingress", "other").stdout
    assert "k8py" in shown and "80, 443" in shown


def test_tls_by_sni_on_every_node(ingress_lab):
    lab, addresses, cert = ingress_lab
    wanted = ssl.PEM_cert_to_DER_cert(cert.decode())
    for node, address in addresses.items():
        wait_for(lambda: served_certificate(address, "b.example.test") == wanted,
                 timeout=60, interval=0.5, what=f"the Secret's certificate on {node}")
        # another name: the fallback certificate
        assert served_certificate(address, "nothing.example.test") not in (None, wanted)
        # and HTTPS carries the request through, verified against that certificate
        context = ssl.create_default_context(cadata=cert.decode())
        with socket.create_connection((address, 443), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="b.example.test") as tls:
            tls.sendall(b"GET /index.html HTTP/1.0\r\nHost: b.example.test\r\n\r\n")
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
        assert answer.split(b"\r\n\r\n", 1)[-1].strip() == b"ing-b"


def test_websocket_and_live_change_without_dropping(ingress_lab):
    import asyncio

    import aiohttp

    lab, addresses, _ = ingress_lab
    backend = subprocess.Popen(
        [sys.executable, "-m", "k8py", "lab", "exec", "--name", lab.name, "agent-1", "--",
         sys.executable, "-c", WS_ECHO], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        apply(lab, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ws"},
                    "spec": {"ports": [{"name": "ws", "port": 80}]}},
              {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "ws-manual",
                            "labels": {"kubernetes.io/service-name": "ws"}},
               "addressType": "IPv4", "ports": [{"name": "ws", "port": WS_PORT}],
               "endpoints": [{"addresses": [addresses["agent-1"]],
                              "conditions": {"ready": True}}]},
              {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "ws"},
               "spec": {"rules": [rule("ws.example.test", ("/ws", "ws"))]}})

        async def echo_on(address: str) -> bool:
            try:
                async with aiohttp.ClientSession() as session, session.ws_connect(
                        f"http://{address}/ws", headers={"Host": "ws.example.test"},
                        timeout=aiohttp.ClientWSTimeout(ws_close=3)) as ws:
                    await ws.send_str("hi")
                    return (await ws.receive_str(timeout=3)) == "echo:hi"
            except (aiohttp.ClientError, OSError, TimeoutError):
                return False
        for node, address in addresses.items():
            wait_for(lambda: asyncio.run(echo_on(address)), timeout=60, interval=0.5,
                     what=f"a WebSocket echoed through {node}'s ingress")

        # open: a keep-alive connection and a WebSocket on the server's address; then the
        # Ingress changes its / to ing-b
        address = addresses["server"]
        keep = http.client.HTTPConnection(address, 80, timeout=5)

        def over_keep_alive() -> str:
            keep.request("GET", "/index.html", headers={"Host": "a.example.test"})
            return keep.getresponse().read().decode().strip()
        assert over_keep_alive() == "ing-a"
        sock = keep.sock

        async def socket_through_the_change() -> None:
            async with aiohttp.ClientSession() as session, session.ws_connect(
                    f"http://{address}/ws", headers={"Host": "ws.example.test"}) as ws:
                await ws.send_str("before")
                assert await ws.receive_str(timeout=3) == "echo:before"
                await asyncio.to_thread(lab.kubectl, "patch", "ingress", "site", "--type",
                                        "json", "-p", json.dumps([{
                                            "op": "replace",
                                            "path": "/spec/rules/0/http/paths/0/backend/"
                                                    "service/name", "value": "ing-b"}]))
                await asyncio.to_thread(wait_for, lambda: over_keep_alive() == "ing-b",
                                        timeout=30, interval=0.2,
                                        what="the change on the open keep-alive connection")
                await ws.send_str("after")
                assert await ws.receive_str(timeout=3) == "echo:after"
        asyncio.run(socket_through_the_change())
        assert keep.sock is sock  # the same connection all along
        keep.close()
    finally:
        backend.kill()
        backend.wait()
