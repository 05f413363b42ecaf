"""A joined node across a CA rotation, and the kubelet serving renewal endpoint.

The server is stopped, `k8py certificate rotate-ca` run, the server started again: the node
keeps authenticating with its certificate of the old CA, it restarts and joins with its old
token (whose CA hash no longer matches: the CA it stored vouches for the new bundle, which it
stores), and after `rotate-ca --finish` only the new CA's certificates get in."""

from __future__ import annotations

import ssl

import aiohttp
import pytest
from click.testing import CliRunner
from cryptography import x509

from k8py import certificates
from k8py.agent import join
from k8py.agent.certrotation import certificate_request
from k8py.cli import cli
from k8py.server import pki
from tests.integration.inloop import running_apiserver

NODE = "worker-1"


def node_context(credentials: join.Credentials) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=credentials.ca_cert)
    context.load_cert_chain(credentials.client_cert, credentials.client_key)
    return context


async def get(url: str, context: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        async with session.get(url + "/api/v1/nodes") as response:
            return response.status


async def test_a_node_across_a_ca_rotation(tmp_path):
    tls_dir = str(tmp_path / "data" / "agent" / "tls")
    async with running_apiserver(tmp_path, join=True) as server:
        token = pki.read_token(server.certs)
        credentials = await join.join(server.url, token, tls_dir, NODE, ("127.0.0.1",))
        old_client = certificates.load_certificate(credentials.client_cert)
        old_context = node_context(credentials)  # holds the old CA only
        assert await get(server.url, old_context) == 200

    result = CliRunner().invoke(cli, ["certificate", "rotate-ca", "-d", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    async with running_apiserver(tmp_path, join=True) as server:
        assert len(certificates.load_certificates(server.certs.ca_cert)) == 2
        # the node's old certificate, and its trust of the old CA only, still work
        assert await get(server.url, old_context) == 200
        # it restarts with its old token: the stored CA vouches for the new bundle
        assert pki.read_token(server.certs) != token
        again = await join.join(server.url, token, tls_dir, NODE, ("127.0.0.1",))
        with open(again.ca_cert, "rb") as f:
            assert f.read() == pki.ca_pem(server.certs)
        assert certificates.load_certificate(again.client_cert) == old_client  # reused
        # a stranger's server, unknown to that CA, is not taken on the same grounds
        stranger_dir = tmp_path / "elsewhere"
        with pytest.raises(join.JoinError, match="does not match the token"):
            await join.join(server.url, token, str(stranger_dir), NODE)

    # the node renews from the new CA (here: `certificate rotate` and a new join)
    result = CliRunner().invoke(cli, ["certificate", "rotate", "-d", str(tmp_path / "data"),
                                      "-s", "kubelet"])
    assert result.exit_code == 0, result.output
    async with running_apiserver(tmp_path, join=True) as server:
        renewed = await join.join(server.url, pki.read_token(server.certs), tls_dir, NODE,
                                  ("127.0.0.1",))
        new_client = certificates.load_certificate(renewed.client_cert)
        new_client.verify_directly_issued_by(
            certificates.load_certificate(server.certs.ca_cert))

    result = CliRunner().invoke(cli, ["certificate", "rotate-ca", "--finish",
                                      "-d", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    async with running_apiserver(tmp_path, join=True) as server:
        assert len(certificates.load_certificates(server.certs.ca_cert)) == 1
        assert await get(server.url, node_context(renewed)) == 200
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, OSError)):
            await get(server.url, old_context)  # the old CA's certificate is refused


async def test_serving_kubelet_renewal_is_for_the_calling_node_only(tmp_path):
    async with running_apiserver(tmp_path, join=True) as server:
        credentials = await join.join(server.url, pki.read_token(server.certs),
                                      str(tmp_path / "agent" / "tls"), NODE, ("127.0.0.1",))
        password = join.node_password(str(tmp_path / "agent" / "node-password"))
        key = certificates.new_key()

        async def post(context, node=NODE, password=password):
            body = {"request": certificate_request(node, key).decode(),
                    "addresses": ["10.1.2.3"], "hostnames": ["w1.example"],
                    "nodePassword": password}
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=context)) as session:
                async with session.post(server.url + "/v1-k8py/serving-kubelet",
                                        json=body) as response:
                    return response.status, await response.json(content_type=None)

        status, answer = await post(node_context(credentials))
        assert status == 200, answer
        chain = x509.load_pem_x509_certificates(answer["servingCert"].encode())
        assert chain[0].public_key() == key.public_key()
        assert chain[0].subject == pki.node_name(NODE)
        sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {NODE, "w1.example", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
        assert answer["ca"] == pki.ca_pem(server.certs).decode()

        status, answer = await post(node_context(credentials), node="worker-2")
        assert status == 403 and "renews only its own certificate" in answer["message"]
        status, answer = await post(node_context(credentials), password="x" * 20)
        assert status == 403 and answer["reason"] == "Forbidden"
        status, _ = await post(server.ssl(client_cert=True))  # the admin is not a node
        assert status == 401
        status, _ = await post(server.ssl(client_cert=False))
        assert status == 401
