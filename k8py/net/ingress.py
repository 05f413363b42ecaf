"""The built-in ingress controller (IngressClass `k8py`, controller `k8py.io/ingress`), run
by every agent in its own event loop: Traefik's place in k3s, without a pod or a process.

Listeners: HTTP on `--ingress-http-port` (80) and HTTPS on `--ingress-https-port` (443)
of every address of the node; `--disable-ingress` turns it off. What they serve is
`k8py.net.ingressproxy` over the routing table `k8py.net.ingressrules.build` makes from
informers on IngressClasses, Ingresses, Services and EndpointSlices (the last two shared with
the Service proxy and DNS) and TLS Secrets. On any change the table is built again and
swapped whole, so requests (and keep-alive connections) in flight are never dropped.

TLS: one server context with a self-signed fallback certificate (as ingress-nginx's "Fake
Certificate"), and an SNI callback that hands a connection the context of the Secret
(type `kubernetes.io/tls`, in the Ingress's namespace) the table names for its server name.
Key material is loaded from memory files (`memfd`), never written to disk.

Who reads what: the node's own identity reads IngressClasses and Ingresses (RBAC `k8py:node`).
The Node authorizer lets a node read only the Secrets its pods use, and k8py keeps that
promise, so TLS Secrets are read through `secrets_client`, a client acting as the service
account `kube-system/k8py-ingress` (ClusterRole `k8py:ingress-secrets`; the reach k3s gives
Traefik's account). The embedded agent of `k8py server` gets one in process; a joined agent
one holding that account's token bound to its Node (`k8py.agent.ingresstoken`). Its informer
lists only `type=kubernetes.io/tls` Secrets; the listeners wait for it at most
`SECRETS_WAIT` seconds (a token not granted yet must not keep HTTP down), HTTPS answering
with the fallback certificate until it has synced. `status.loadBalancer` of the
Ingresses is written by the server (`k8py.server.controllers.ingressstatus`), not here:
once both listeners are up, the controller announces the ports on its Node
(`PORTS_ANNOTATION`, `{"http": 80, "https": 443}`; removed when it stops or the agent runs
with `--disable-ingress`), and the server lists the Ready nodes that announce them, as k3s
lists the nodes running Traefik's ServiceLB pods, and keeps LoadBalancer Services off those
ports on those nodes (`k8py.server.controllers.servicelb`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import os
import ssl
from typing import Any

from aiohttp import web

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.informer import Informer
from k8py.net import ingressrules
from k8py.net.ingressproxy import ReverseProxy

log = logging.getLogger(__name__)

INGRESSES = builtin("networking.k8s.io/v1", "ingresses")
INGRESS_CLASSES = builtin("networking.k8s.io/v1", "ingressclasses")
SECRETS = builtin("v1", "secrets")
SERVICES = builtin("v1", "services")
ENDPOINT_SLICES = builtin("discovery.k8s.io/v1", "endpointslices")
TLS_SECRET_TYPE = "kubernetes.io/tls"
SETTLE = 0.05  # changes arriving together make one new table
SECRETS_WAIT = 10.0
NODES = builtin("v1", "nodes")
PORTS_ANNOTATION = "ingress.k8py.io/ports"


def announced_ports(node: dict[str, Any]) -> dict[str, int]:
    """The ports a node's ingress listens on ({} when it runs none)."""
    value = (node["metadata"].get("annotations") or {}).get(PORTS_ANNOTATION)
    try:
        ports = json.loads(value) if value else {}
    except ValueError:
        return {}
    return {scheme: port for scheme, port in ports.items()
            if scheme in ("http", "https") and isinstance(port, int)} \
        if isinstance(ports, dict) else {}


async def announce(client: Client, node_name: str, ports: dict[str, int] | None) -> None:
    """Say on the Node which ports its ingress listens on (None: that it runs none)."""
    value = json.dumps(ports, sort_keys=True) if ports else None
    await client.patch(NODES, node_name, {"metadata": {"annotations": {
        PORTS_ANNOTATION: value}}})


def _memory_file(data: bytes) -> int:
    fd = os.memfd_create("k8py-ingress-tls", os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd


def tls_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server context with this certificate chain and key (ssl.SSLError if unusable)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    cert_fd, key_fd = _memory_file(cert_pem), _memory_file(key_pem)
    try:
        context.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}")
    finally:
        os.close(cert_fd)
        os.close(key_fd)
    return context


def fallback_certificate() -> tuple[bytes, bytes]:
    """A self-signed certificate for names no Ingress has a certificate for."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         "K8PY INGRESS DEFAULT CERTIFICATE")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class IngressController:
    def __init__(self, client: Client, *, http_port: int = 80, https_port: int = 443,
                 address: str = "0.0.0.0", secrets_client: Client | None = None,
                 informers: tuple[Informer, Informer] | None = None,
                 node_name: str | None = None):
        self.client, self.node_name = client, node_name  # node_name: announce the ports
        self.shared = informers is not None
        self.services, self.slices = informers or (Informer(client, SERVICES),
                                                   Informer(client, ENDPOINT_SLICES))
        self.classes = Informer(client, INGRESS_CLASSES)
        self.ingresses = Informer(client, INGRESSES)
        self.secrets = Informer(secrets_client, SECRETS,
                                field_selector=f"type={TLS_SECRET_TYPE}") \
            if secrets_client is not None else None
        self.http_port, self.https_port, self.address = http_port, https_port, address
        self.table = ingressrules.Table({})
        self.proxy = ReverseProxy(lambda: self.table)
        self.contexts: dict[str, tuple[str, ssl.SSLContext]] = {}  # key -> (rv, context)
        self.unusable: dict[str, str] = {}  # key -> resourceVersion already warned about
        self.bound: dict[str, int] = {}  # "http"/"https" -> the port listened on
        self.changed = asyncio.Event()
        self.listening = asyncio.Event()  # set once a listener is up
        self.generation = 0  # tables built so far (tests wait on it)

    async def _announce(self, listeners: list[asyncio.Task]) -> None:
        """The Node's annotation, once both listeners are up (retried: the Node may not be
        registered yet)."""
        await asyncio.gather(*listeners)
        delay = 1.0
        while True:
            try:
                await announce(self.client, self.node_name, dict(self.bound))
                return
            except errors.StatusError as exc:
                log.debug("ingress: announcing the ports on node %s: %s", self.node_name,
                          exc.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _on_change(self, *_objects: Any) -> None:
        self.changed.set()

    def rebuild(self) -> None:
        table = ingressrules.build(self.classes.list(), self.ingresses.list(),
                                   self.services.list(), self.slices.list())
        contexts = {}
        for key in set(table.tls_hosts.values()):
            secret = self.secrets.get(key) if self.secrets is not None else None
            if secret is None:
                continue
            version = secret["metadata"].get("resourceVersion", "")
            known = self.contexts.get(key)
            if known is not None and known[0] == version:
                contexts[key] = known
                continue
            data = secret.get("data") or {}
            try:
                contexts[key] = (version, tls_context(base64.b64decode(data["tls.crt"]),
                                                      base64.b64decode(data["tls.key"])))
            except (KeyError, ValueError, ssl.SSLError, OSError) as exc:
                if self.unusable.get(key) != version:  # once per version of the Secret
                    log.warning("ingress: TLS Secret %s is unusable: %s", key,
                                type(exc).__name__)  # the reason may quote key material
                self.unusable[key] = version
        self.contexts = contexts
        self.table = table  # one assignment: requests see the old table or the new one
        self.generation += 1

    def _sni(self, connection: ssl.SSLObject, server_name: str | None,
             _context: ssl.SSLContext) -> None:
        key = self.table.secret_for(server_name)
        known = self.contexts.get(key) if key else None
        if known is not None:
            connection.context = known[1]

    def server_context(self) -> ssl.SSLContext:
        context = tls_context(*fallback_certificate())
        context.sni_callback = self._sni
        return context

    async def _listen(self, runner: web.AppRunner, scheme: str, port: int,
                      context: ssl.SSLContext | None) -> None:
        """Listen on `port`; a port taken (or not ours to bind) is tried again later
        rather than ending the agent."""
        delay = 1.0
        while True:
            site = web.TCPSite(runner, self.address, port, ssl_context=context,
                               reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                log.warning("ingress: cannot listen for %s on %s:%d (%s); retrying in %.0f s",
                            scheme, self.address, port, exc.strerror or exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            server = site._server  # the port actually bound when 0 was asked for
            self.bound[scheme] = server.sockets[0].getsockname()[1] if server else port
            log.info("ingress: %s on %s:%d", scheme, self.address, self.bound[scheme])
            self.listening.set()
            return

    async def run(self, ready: asyncio.Event | None = None) -> None:
        informers = [i for i in (self.classes, self.ingresses, self.secrets) if i is not None]
        if not self.shared:
            informers += [self.services, self.slices]
        if self.secrets is None:
            log.info("ingress: no credentials for TLS Secrets: HTTPS with the fallback "
                     "certificate only")
        watched = [*informers, *((self.services, self.slices) if self.shared else ())]
        routing = [i for i in watched if i is not self.secrets]
        for informer in watched:
            informer.add_handlers(self._on_change, self._on_change, self._on_change)
        tasks = [asyncio.create_task(i.run(), name=f"ingress-{i.resource.plural}")
                 for i in informers]
        app = web.Application(handler_args={"max_field_size": 16384})
        app.router.add_route("*", "/{tail:.*}", self.proxy.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        try:
            await asyncio.gather(*(i.synced.wait() for i in routing))
            if self.secrets is not None:
                try:
                    async with asyncio.timeout(SECRETS_WAIT):
                        await self.secrets.synced.wait()
                except TimeoutError:
                    log.warning("ingress: TLS Secrets not readable yet: HTTPS with the "
                                "fallback certificate until they are")
            self.rebuild()
            await self.proxy.start()
            await runner.setup()
            tasks += [asyncio.create_task(self._listen(runner, scheme, port, context))
                      for scheme, port, context in (
                          ("http", self.http_port, None),
                          ("https", self.https_port, self.server_context()))]
            if ready is not None:
                ready.set()
            if self.node_name:
                tasks.append(asyncio.create_task(self._announce(tasks[-2:])))
            while True:
                await self.changed.wait()
                await asyncio.sleep(SETTLE)
                self.changed.clear()
                self.rebuild()
                log.debug("ingress: table %d: %d hosts", self.generation,
                          len(self.table.hosts))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.node_name and self.bound:
                with contextlib.suppress(errors.StatusError, TimeoutError):
                    async with asyncio.timeout(3):
                        await announce(self.client, self.node_name, None)
            await runner.cleanup()
            await self.proxy.close()
