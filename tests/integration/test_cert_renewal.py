"""Certificates renewed while everything runs: a real server in this loop (the daemon's own
store, API server and control loops) issuing certificates that live 20 seconds, and a node
joined to it with the agent's rotation.

Within one lifetime: the API server serves a new certificate on new connections; the admin
kubeconfig is rewritten and keeps working; the node's kubelet client certificate is renewed
through a CertificateSigningRequest the node itself creates, that the approver approves
(`selfnodeclient`) and the signer issues, and the node keeps authenticating after its first
certificate has expired; its serving certificate is renewed by the server and a server
following the file (as the kubelet's) serves it on new connections."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import os
import ssl

import aiohttp
import pytest
from click.testing import CliRunner
from cryptography import x509

from k8py import certificates, tls
from k8py.agent import join
from k8py.agent.certrotation import Rotation
from k8py.api.resources import builtin
from k8py.cli import cli
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from k8py.server import daemon, pki
from k8py.server.apiserver.authn import TokenFile
from k8py.server.store import open_backend
from tests.conftest import eventually
from tests.integration.inloop import free_port

VALIDITY = 20  # seconds: renewed 14-18 s after issuance (70-90% of 22 s, 2 s backdated)
CSRS = builtin("certificates.k8s.io/v1", "certificatesigningrequests")
REVIEWS = builtin("authentication.k8s.io/v1", "selfsubjectreviews")
NAMESPACES = builtin("v1", "namespaces")


async def served_certificate(host: str, port: int, context: ssl.SSLContext
                             ) -> x509.Certificate:
    """The certificate a new TLS connection is shown."""
    _, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


@dataclasses.dataclass
class RunningServer:
    url: str
    port: int
    certs: pki.PKI
    kubeconfig: str
    data_dir: str


@pytest.fixture
async def server(tmp_path, monkeypatch):
    monkeypatch.setenv(certificates.VALIDITY_SECONDS_ENV, str(VALIDITY))
    data_dir = str(tmp_path / "data")
    port = free_port()
    config = daemon.ServerConfig(
        data_dir=data_dir, datastore_endpoint="memory://",
        bind_address=ipaddress.ip_address("127.0.0.1"), https_listen_port=port,
        write_kubeconfig=str(tmp_path / "kubeconfig.yaml"), disable_agent=True,
        disable_scheduler=True)
    server_dir = os.path.join(data_dir, "server")
    os.makedirs(server_dir, mode=0o700)
    certs = pki.ensure_pki(server_dir, **daemon.serving_names(config))  # as daemon.run
    tokens = TokenFile.ensure(os.path.join(server_dir, "cred", "tokens"), pki.ADMIN_USER,
                              (pki.ADMIN_GROUP,))
    store = open_backend(config.datastore_endpoint, data_dir)
    store_ready = asyncio.Event()
    handler = asyncio.get_running_loop().create_future()
    tasks = [asyncio.create_task(daemon.run_store(store, store_ready)),
             asyncio.create_task(daemon.run_apiserver(config, store, store_ready, certs, tokens,
                                                      handler)),
             asyncio.create_task(daemon.run_control_loops(config, handler))]
    try:
        await eventually(lambda: os.path.exists(config.write_kubeconfig), timeout=15,
                         what="the admin kubeconfig")
        yield RunningServer(f"https://127.0.0.1:{port}", port, certs, config.write_kubeconfig,
                            data_dir)
    finally:
        for task in reversed(tasks):  # the control loops, then the API server, then the store
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_certificates_renew_while_clients_keep_working(server, tmp_path):
    certs = server.certs
    trusting = ssl.create_default_context(cafile=certs.ca_cert)
    first_serving = await served_certificate("127.0.0.1", server.port, trusting)
    first_admin = certificates.load_certificate(certs.admin_cert)
    assert certificates.lifetime(first_serving).total_seconds() == VALIDITY + 2

    # a node joins and runs its rotation
    agent_dir = tmp_path / "data" / "agent"  # the same data dir: `certificate check` sees it
    credentials = await join.join(server.url, pki.read_token(certs), str(agent_dir / "tls"),
                                  "node-a", ("127.0.0.1",))
    first_client = certificates.load_certificate(credentials.client_cert)
    first_pair = (str(tmp_path / "first.crt"), str(tmp_path / "first.key"))
    for src, dst in zip((credentials.client_cert, credentials.client_key), first_pair):
        with open(src, "rb") as f:
            certificates.write_private(dst, f.read())
    first_kubelet_serving = certificates.load_certificate(credentials.serving_cert)
    transport = credentials.transport(server.url)
    client = Client(transport, field_manager="k8py-kubelet")
    rotation = asyncio.create_task(Rotation(
        credentials, client, transport, "node-a", addresses=("127.0.0.1",),
        password_file=str(agent_dir / "node-password")).run())
    # a server following the kubelet serving certificate file, as the kubelet's does
    kubelet_context = tls.server_context(credentials.serving_cert, credentials.serving_key,
                                         credentials.ca_cert, require_client_cert=True)
    kubelet = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0,
                                         ssl=kubelet_context)
    kubelet_port = kubelet.sockets[0].getsockname()[1]
    following = asyncio.create_task(tls.follow(kubelet_context, credentials.serving_cert,
                                               credentials.serving_key, interval=0.2))
    as_apiserver = ssl.create_default_context(cafile=certs.ca_cert)
    as_apiserver.check_hostname = False
    as_apiserver.load_cert_chain(*pki.kubelet_client_paths(certs))
    try:
        async def renewed_serving():
            served = await served_certificate("127.0.0.1", server.port, trusting)
            return served if served.serial_number != first_serving.serial_number else None
        serving = await eventually(renewed_serving, timeout=VALIDITY + 15, interval=0.5,
                                   what="a new serving certificate on a new connection")
        assert serving.not_valid_after_utc > first_serving.not_valid_after_utc

        def renewed(path, first):
            cert = certificates.load_certificate(path)
            return cert if cert.serial_number != first.serial_number else None
        admin = await eventually(lambda: renewed(certs.admin_cert, first_admin),
                                 timeout=VALIDITY, interval=0.2, what="a new admin cert")
        client_cert = await eventually(lambda: renewed(credentials.client_cert, first_client),
                                       timeout=VALIDITY, interval=0.2,
                                       what="a new kubelet client certificate")
        await eventually(lambda: renewed(credentials.serving_cert, first_kubelet_serving),
                         timeout=VALIDITY, interval=0.2, what="a new kubelet serving cert")
        assert admin.not_valid_after_utc > first_admin.not_valid_after_utc

        async def kubelet_serves_the_new_one():
            served = await served_certificate("127.0.0.1", kubelet_port, as_apiserver)
            return served.serial_number != first_kubelet_serving.serial_number
        await eventually(kubelet_serves_the_new_one, timeout=5, interval=0.2,
                         what="the followed server showing the renewed certificate")

        # the node asked for its certificate itself; the approver and the signer answered
        csrs = (await client.list(CSRS))["items"]
        mine = [c for c in csrs if c["spec"]["username"] == "system:node:node-a"]
        assert mine and mine[0]["metadata"]["name"].startswith("csr-")
        assert mine[0]["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
        approved = [c for c in mine[0]["status"]["conditions"] if c["type"] == "Approved"]
        assert approved[0]["reason"] == "AutoApproved"
        assert approved[0]["message"] == ("Auto approving self kubelet client certificate "
                                          "after SubjectAccessReview.")
        issued = {x509.load_pem_x509_certificates(base64.b64decode(
            c["status"]["certificate"]))[0].serial_number for c in mine}
        assert client_cert.serial_number in issued

        # past the end of the first certificates, the node and the admin still get in
        await eventually(lambda: certificates.now() > max(
            first_client.not_valid_after_utc, first_admin.not_valid_after_utc),
            timeout=VALIDITY + 5, interval=0.2, what="the first certificates' end")
        review = await client.create(REVIEWS, {"apiVersion": "authentication.k8s.io/v1",
                                               "kind": "SelfSubjectReview"})
        assert review["status"]["userInfo"]["username"] == "system:node:node-a"
        admin_client = Client(HttpTransport.from_kubeconfig(server.kubeconfig))
        try:
            assert (await admin_client.list(NAMESPACES))["items"]
        finally:
            await admin_client.close()
        # the first certificate is refused now: it is the renewed one that gets the node in
        stale = ssl.create_default_context(cafile=certs.ca_cert)
        stale.load_cert_chain(*first_pair)
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=stale)) as session:
                async with session.get(server.url + "/api") as response:
                    await response.read()
    finally:
        for task in (rotation, following):
            task.cancel()
        await asyncio.gather(rotation, following, return_exceptions=True)
        kubelet.close()
        await client.close()

    table = CliRunner().invoke(cli, ["certificate", "check", "-d", server.data_dir,
                                     "-o", "table"])
    assert table.exit_code == 0, table.output
    names = [line.split()[0] for line in table.output.splitlines()[2:]]
    for name in ("server-ca.crt", "client-admin.crt", "serving.crt", "client-kubelet.crt",
                 "serving-kubelet.crt"):
        assert name in names
