"""Renewing a joined agent's certificates while it runs, without its join token.

- The kubelet's client certificate, as upstream's kubelet rotates it: a new key, a
  CertificateSigningRequest (`generateName: csr-`, signer
  `kubernetes.io/kube-apiserver-client-kubelet`, subject `O=system:nodes`,
  `CN=system:node:<name>`, usages digital signature and client auth: the set upstream takes
  for keys that are not RSA) created by the node itself, authenticated with its current
  certificate. The server's `csrapproving` controller approves it (the requester is the node
  it names) and `csrsigning` issues it; the agent waits for `status.certificate`, checks it
  is for its key and its name, writes key then certificate, and loads it into the client's
  TLS context (`HttpTransport.renew_client_certificate`): the next requests present it.
- The kubelet's serving certificate, as k3s does it: signed by the server itself
  (`POST /v1-k8py/serving-kubelet`, authenticated by the client certificate and the node
  password), for a new key whose CSR the agent sends. Upstream's `kubernetes.io/kubelet-
  serving` signer needs a human's approval for every renewal, which no k3s user gives; the
  kubelet server follows its file (`tls.follow`).
- The trust bundle: every `ca_refresh` seconds and after each renewal, `/cacerts` over the
  verified connection (the transport's: like the CSRs, it goes to whichever API server the
  agent's server list fails over to, `client.loadbalancer`); a changed bundle (a CA rotation) is written to `server-ca.crt` and
  trusted by the client and the kubelet server from then on.

Each certificate is renewed between 70% and 90% of its lifetime (`certificates.
keep_renewed`); a failure is retried, the current certificate serving meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from k8py import certificates, tls
from k8py.agent.join import Credentials, node_password
from k8py.api import errors
from k8py.api.resources import builtin
from k8py.certificates import key_pem, new_key, write_private
from k8py.client.client import Client
from k8py.client.http import HttpTransport

log = logging.getLogger(__name__)

CSRS = builtin("certificates.k8s.io/v1", "certificatesigningrequests")
KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
CLIENT_USAGES = ["digital signature", "client auth"]
SERVING_KUBELET_PATH = "/v1-k8py/serving-kubelet"


def node_subject(node: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}")])


def certificate_request(node: str, key) -> bytes:
    """A PEM CSR for `key` with the node's subject and no names (the server names a
    serving certificate itself)."""
    return x509.CertificateSigningRequestBuilder().subject_name(node_subject(node)).sign(
        key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


class Rotation:
    """The running agent's certificate renewals; `run()` until cancelled."""

    def __init__(self, credentials: Credentials, client: Client,
                 transport: HttpTransport, node: str, *, addresses: tuple[str, ...] = (),
                 hostnames: tuple[str, ...] = (), password_file: str,
                 issue_timeout: float = 900.0, ca_refresh: float = 600.0,
                 fraction: float | None = None):
        self.credentials = credentials
        self.client, self.transport, self.node = client, transport, node
        self.addresses, self.hostnames, self.password_file = addresses, hostnames, password_file
        self.issue_timeout, self.ca_refresh, self.fraction = issue_timeout, ca_refresh, fraction

    async def run(self) -> None:
        await asyncio.gather(
            certificates.keep_renewed("kubelet client", self.credentials.client_cert,
                                      self.renew_client, fraction=self.fraction),
            certificates.keep_renewed("kubelet serving", self.credentials.serving_cert,
                                      self.renew_serving, fraction=self.fraction),
            self._refresh_ca())

    async def renew_client(self) -> None:
        key = await asyncio.to_thread(new_key)
        created = await self.client.create(CSRS, {
            "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"generateName": "csr-"},
            "spec": {"request": base64.b64encode(certificate_request(self.node, key)).decode(),
                     "signerName": KUBELET_CLIENT_SIGNER, "usages": CLIENT_USAGES}})
        name = created["metadata"]["name"]
        log.info("kubelet client certificate: certificate signing request %s created", name)
        chain = await self._issued(name)
        certs = x509.load_pem_x509_certificates(chain)
        if certs[0].public_key() != key.public_key() or \
                certs[0].subject != node_subject(self.node):
            raise ValueError(f"the certificate issued for {name} is not for this node's key")
        old = certificates.load_certificate(self.credentials.client_cert)
        write_private(self.credentials.client_key, key_pem(key))
        write_private(self.credentials.client_cert, chain)
        self.transport.renew_client_certificate(
            self.credentials.client_cert, self.credentials.client_key,
            retire_after=certificates.seconds_until(old.not_valid_after_utc))
        await self._refresh_ca_once()

    async def _issued(self, name: str) -> bytes:
        """The certificate of CSR `name` once issued; an error if denied or failed."""
        deadline = asyncio.get_running_loop().time() + self.issue_timeout
        delay = 0.2
        while True:
            csr = await self.client.get(CSRS, name)
            status: dict[str, Any] = csr.get("status") or {}
            if status.get("certificate"):
                return base64.b64decode(status["certificate"])
            for condition in status.get("conditions") or []:
                if condition.get("type") in ("Denied", "Failed"):
                    raise ValueError(f"certificate signing request {name} "
                                     f"{condition['type'].lower()}: "
                                     f"{condition.get('message') or condition.get('reason')}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"certificate signing request {name} was not issued in "
                                   f"{self.issue_timeout:.0f} s (is it approved?)")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def renew_serving(self) -> None:
        key = await asyncio.to_thread(new_key)
        answer = await self._post(SERVING_KUBELET_PATH, {
            "request": certificate_request(self.node, key).decode(),
            "addresses": list(self.addresses), "hostnames": list(self.hostnames),
            "nodePassword": node_password(self.password_file)})
        chain = str(answer.get("servingCert", "")).encode()
        if x509.load_pem_x509_certificates(chain)[0].public_key() != key.public_key():
            raise ValueError("the serving certificate issued is not for this node's key")
        write_private(self.credentials.serving_key, key_pem(key))
        write_private(self.credentials.serving_cert, chain)
        await self._refresh_ca_once()

    async def _post(self, path: str, body: dict) -> dict:
        status, raw = await self.transport.request("POST", path, body=body)
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {}
        if status != 200:
            raise errors.from_status(answer if isinstance(answer, dict) else {}, status)
        return answer

    async def _refresh_ca_once(self) -> None:
        status, bundle = await self.transport.request("GET", "/cacerts")
        if status != 200:
            raise errors.ServiceUnavailable(f"/cacerts answered {status}")
        x509.load_pem_x509_certificates(bundle)  # a bundle, or ValueError
        with open(self.credentials.ca_cert, "rb") as f:
            if f.read() == bundle:
                return
        write_private(self.credentials.ca_cert, bundle)
        tls.trust(self.transport.tls, self.credentials.ca_cert)
        log.info("the server's CA bundle changed: %s updated", self.credentials.ca_cert)

    async def _refresh_ca(self) -> None:
        while True:
            await asyncio.sleep(self.ca_refresh)
            try:
                await self._refresh_ca_once()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError,
                    errors.StatusError) as exc:
                log.info("refreshing the CA bundle: %s", exc or type(exc).__name__)
