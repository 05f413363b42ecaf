"""Cluster DNS, answered by every agent for its node's pods (instead of CoreDNS pods).

Where: the cluster DNS address (`--cluster-dns`, the `kube-system/kube-dns` Service's
ClusterIP) is put on a dummy interface `k8py-dns` in the node's network namespace (on `lo`
where the kernel has no dummy devices), so a pod's query to it is delivered to this node's
own listener (UDP and TCP port 53), as NodeLocal DNSCache does; the proxy leaves that
address alone. A failure to serve is logged and retried; it never stops the agent.

What (the Kubernetes DNS specification, and CoreDNS's kubernetes plugin where it is silent),
`resolve` being a pure function of a `ClusterView` of Services, EndpointSlices and Nodes:
- `<svc>.<ns>.svc.<domain>`: A to the ClusterIP; for a headless Service, every ready
  endpoint's address (none ready: NXDOMAIN); ExternalName: a CNAME;
- `<hostname>.<svc>.<ns>.svc.<domain>`: endpoints with a hostname (StatefulSet pods);
- `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV for named ports;
- PTR for ClusterIPs and headless endpoints; `<a-b-c-d>.<ns>.pod.<domain>` (CoreDNS's `pods
  insecure`, k3s's default); `dns-version.<domain>` TXT;
- node names resolve to their addresses (k3s's NodeHosts);
- NXDOMAIN for names that do not exist and NOERROR with no answer for names that exist
  without that type, each with the zone's SOA; TTL 5 s; names case-insensitive. A name under
  the cluster domain is never forwarded: the search-path misses of `ndots:5` are answered
  here;
- everything else is forwarded to the resolvers of `--resolv-conf` (never to ourselves),
  with a cache; an upstream that does not answer gives SERVFAIL.
UDP answers larger than the client allows (512 bytes, or its EDNS size) are truncated (TC),
and the client asks again over TCP.

The wire format is dnspython's (`dns.message`), a maintained codec (decision record 6).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import struct
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

if TYPE_CHECKING:
    from k8py.client.informer import Informer

log = logging.getLogger(__name__)

TTL = 5
SPEC_VERSION = "1.1.0"
CACHE_SECONDS = 30.0
UPSTREAM_TIMEOUT = 2.0
DEVICE = "k8py-dns"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    ip: str
    hostname: str = ""

    @property
    def label(self) -> str:
        """Its name under its Service: the hostname, else the address with dashes."""
        return self.hostname or self.ip.replace(".", "-")


@dataclasses.dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    cluster_ip: str | None  # None: headless
    external_name: str = ""
    ports: tuple[tuple[str, str, int], ...] = ()  # (name, protocol, port)
    endpoints: tuple[Endpoint, ...] = ()  # ready ones


class ClusterView:
    """The cluster as DNS sees it, indexed for lookups."""

    def __init__(self, domain: str, services: Iterable[Mapping[str, Any]],
                 slices: Iterable[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]]):
        self.domain = dns.name.from_text(domain)
        endpoints: dict[tuple[str, str], list[Endpoint]] = {}
        for item in slices:
            metadata = item.get("metadata") or {}
            owner = (metadata.get("labels") or {}).get("kubernetes.io/service-name")
            if not owner or item.get("addressType", "IPv4") != "IPv4":
                continue
            for endpoint in item.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                for address in endpoint.get("addresses") or []:
                    endpoints.setdefault((metadata.get("namespace", ""), owner), []).append(
                        Endpoint(address, endpoint.get("hostname") or ""))
        self.services: dict[tuple[str, str], Service] = {}
        self.ptr: dict[str, list[str]] = {}
        for item in services:
            metadata, spec = item.get("metadata") or {}, item.get("spec") or {}
            key = (metadata.get("namespace", ""), metadata.get("name", ""))
            ip = spec.get("clusterIP")
            service = Service(
                key[0], key[1], None if ip in (None, "", "None") else ip,
                spec.get("externalName", "") if spec.get("type") == "ExternalName" else "",
                tuple((p.get("name", ""), p.get("protocol", "TCP"), p.get("port", 0))
                      for p in spec.get("ports") or [] if p.get("port")),
                tuple(sorted(set(endpoints.get(key, ())), key=lambda e: e.ip)))
            self.services[key] = service
            fqdn = f"{key[1]}.{key[0]}.svc.{domain}."
            if service.cluster_ip:
                self.ptr.setdefault(service.cluster_ip, []).append(fqdn)
            elif not service.external_name:
                for endpoint in service.endpoints:
                    self.ptr.setdefault(endpoint.ip, []).append(f"{endpoint.label}.{fqdn}")
        self.nodes: dict[str, str] = {}
        for node in nodes:
            for address in (node.get("status") or {}).get("addresses") or []:
                if address.get("type") == "InternalIP":
                    self.nodes[node["metadata"]["name"].lower()] = address["address"]
                    break
        self.namespaces = {key[0] for key in self.services}


@dataclasses.dataclass
class Answer:
    rcode: int
    answer: list[dns.rrset.RRset]


def _rrset(name: dns.name.Name, rdtype: int, *texts: str) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, TTL, [_rdata(rdtype, text) for text in texts])


@functools.lru_cache(maxsize=8192)
def _rdata(rdtype: int, text: str) -> dns.rdata.Rdata:
    """Parsed once: the same addresses and targets are answered again and again (rdata
    objects are immutable)."""
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)


def soa(domain: dns.name.Name) -> dns.rrset.RRset:
    serial = int(time.time()) & 0x7FFFFFFF
    return _rrset(domain, dns.rdatatype.SOA,
                  f"ns.dns.{domain} hostmaster.{domain} {serial} 7200 1800 86400 {TTL}")


def resolve(view: ClusterView, name: dns.name.Name, rdtype: int) -> Answer | None:
    """The answer to a question about `name`, or None when it is not ours (forward it)."""
    name = name.canonicalize()  # lower case (names are case-insensitive)
    if name.is_subdomain(view.domain):
        return _cluster(view, name, rdtype)
    reverse = _reverse_ip(name)
    if reverse is not None:
        targets = view.ptr.get(reverse)
        if targets is None:
            return None
        return _found(name, rdtype, dns.rdatatype.PTR, targets)
    if len(name.labels) == 2:  # a bare node name (NodeHosts)
        ip = view.nodes.get(name.labels[0].decode())
        if ip is not None:
            return _found(name, rdtype, dns.rdatatype.A, [ip])
    return None


def _found(name, rdtype, have: int, texts: list[str]) -> Answer:
    if rdtype in (have, dns.rdatatype.ANY):
        return Answer(dns.rcode.NOERROR, [_rrset(name, have, *texts)])
    return Answer(dns.rcode.NOERROR, [])  # the name exists, not with that type


def _reverse_ip(name: dns.name.Name) -> str | None:
    labels = [label.decode() for label in name.labels]
    if len(labels) == 7 and labels[4:] == ["in-addr", "arpa", ""]:
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        except ValueError:
            return None
    return None


def _cluster(view: ClusterView, name: dns.name.Name, rdtype: int) -> Answer:
    relative = [label.decode() for label in name.relativize(view.domain).labels]
    nxdomain = Answer(dns.rcode.NXDOMAIN, [])
    exists = Answer(dns.rcode.NOERROR, [])
    if relative == ["dns-version"]:
        return _found(name, rdtype, dns.rdatatype.TXT, [f'"{SPEC_VERSION}"'])
    if relative in ([], ["svc"], ["pod"]):
        return exists
    if len(relative) == 2 and relative[1] in ("svc", "pod"):
        return exists if relative[0] in view.namespaces else nxdomain
    if len(relative) == 3 and relative[2] == "pod":  # <a-b-c-d>.<ns>.pod
        try:
            ip = str(ipaddress.IPv4Address(relative[0].replace("-", ".")))
        except ValueError:
            return nxdomain
        return _found(name, rdtype, dns.rdatatype.A, [ip])
    if len(relative) >= 3 and relative[-1] == "svc":
        namespace, service_name = relative[-2], relative[-3]
        service = view.services.get((namespace, service_name))
        if service is None:
            return nxdomain
        prefix = relative[:-3]
        fqdn = f"{service_name}.{namespace}.svc.{view.domain}"
        if not prefix:
            return _service(name, rdtype, service)
        if len(prefix) == 1 and service.cluster_ip is None:  # <hostname>.<svc>
            ips = [e.ip for e in service.endpoints if e.label == prefix[0]]
            return _found(name, rdtype, dns.rdatatype.A, ips) if ips else nxdomain
        if len(prefix) == 2 and prefix[0].startswith("_") and prefix[1].startswith("_"):
            return _srv(name, rdtype, service, prefix[0][1:], prefix[1][1:], fqdn)
        if len(prefix) == 1 and prefix[0].startswith("_"):
            return exists  # _<port>.<svc>: a name on the way to the SRV record
        return nxdomain
    return nxdomain


def _service(name, rdtype, service: Service) -> Answer:
    if service.external_name:
        target = service.external_name.rstrip(".") + "."
        return Answer(dns.rcode.NOERROR, [_rrset(name, dns.rdatatype.CNAME, target)])
    if service.cluster_ip:
        return _found(name, rdtype, dns.rdatatype.A, [service.cluster_ip])
    ips = sorted({e.ip for e in service.endpoints})
    if not ips:
        return Answer(dns.rcode.NXDOMAIN, [])
    return _found(name, rdtype, dns.rdatatype.A, ips)


def _srv(name, rdtype, service: Service, port_name: str, protocol: str, fqdn: str) -> Answer:
    ports = [p for p in service.ports if p[0] == port_name and p[1].lower() == protocol]
    if not ports:
        return Answer(dns.rcode.NXDOMAIN, [])
    if service.cluster_ip:
        records = [f"0 100 {port} {fqdn}" for _, _, port in ports]
    else:
        records = [f"0 {100 // max(len(service.endpoints), 1)} {port} "
                   f"{e.label}.{fqdn}"
                   for _, _, port in ports for e in service.endpoints]
        if not records:
            return Answer(dns.rcode.NXDOMAIN, [])
    return _found(name, rdtype, dns.rdatatype.SRV, records)


def respond(view: ClusterView, query: dns.message.Message) -> dns.message.Message | None:
    """The response to `query`, or None to forward it upstream."""
    if len(query.question) != 1:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    answer = resolve(view, question.name, question.rdtype)
    if answer is None:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA | dns.flags.RA
    response.set_rcode(answer.rcode)
    response.answer = answer.answer
    if not answer.answer or answer.rcode != dns.rcode.NOERROR:
        response.authority = [soa(view.domain)]
    return response


class Forwarder:
    """Questions that are not ours, to the host's resolvers, with a small cache."""

    def __init__(self, servers: list[str], own: set[str], port: int = 53):
        self.servers = [s for s in servers if s not in own]
        self.port = port
        self.cache: dict[tuple[str, int], tuple[float, bytes]] = {}

    def kept(self, wire: bytes, query: dns.message.Message, size: int) -> bytes | None:
        """A cached upstream answer to `query` (`wire`) that fits in `size` bytes, with the
        query's ID; None when there is none yet (then `ask`)."""
        question = query.question[0] if query.question else None
        if question is None:
            return None
        cached = self.cache.get((question.name.to_text().lower(), question.rdtype))
        if cached is None or cached[0] <= time.monotonic() or len(cached[1]) > size:
            return None
        return wire[:2] + cached[1][2:]

    async def ask(self, query: dns.message.Message) -> dns.message.Message:
        question = query.question[0]
        key = (question.name.to_text().lower(), question.rdtype)
        cached = self.cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            response = dns.message.from_wire(cached[1])
            response.id = query.id
            return response
        for server in self.servers:
            try:
                async with asyncio.timeout(UPSTREAM_TIMEOUT):
                    response = await _udp_query(query, server, self.port)
            except (OSError, asyncio.TimeoutError, dns.exception.DNSException):
                continue
            ttl = min((rrset.ttl for rrset in response.answer), default=CACHE_SECONDS)
            self.cache[key] = (time.monotonic() + min(ttl, CACHE_SECONDS),
                               response.to_wire())
            if len(self.cache) > 10000:
                self.cache.pop(next(iter(self.cache)))
            return response
        failed = dns.message.make_response(query)
        failed.set_rcode(dns.rcode.SERVFAIL)
        return failed


async def _udp_query(query: dns.message.Message, server: str,
                     port: int = 53) -> dns.message.Message:
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            if not done.done():
                done.set_result(data)

        def error_received(self, exc):
            if not done.done():
                done.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(server, port))
    try:
        transport.sendto(query.to_wire())
        return dns.message.from_wire(await done)
    finally:
        transport.close()


class DnsServer:
    """UDP and TCP on `address`:53, answering from `view()` and forwarding the rest.

    Answers from the view are kept by question (the query's bytes after its ID, with the
    size limit) until the view changes: a pod's resolver asks the same few questions over
    and over, and a kept answer costs a dictionary lookup instead of a parse and a
    serialization. Such answers are written at once, without a task; only forwarding
    waits."""

    MAX_KEPT = 2048  # a pod asks a few names; bounded whatever it asks

    def __init__(self, address: str, view, forwarder: Forwarder, port: int = 53):
        self.address, self.view, self.forwarder = address, view, forwarder
        self.port = port
        self._kept_for: ClusterView | None = None
        self._kept: dict[tuple[int | None, bytes], bytes] = {}

    def answer(self, wire: bytes, limit: int | None) -> bytes | dns.message.Message | None:
        """The reply from the cluster view; or the parsed query when it is to be forwarded;
        None for what is not a DNS query."""
        view = self.view()
        if view is not self._kept_for:
            self._kept_for, self._kept = view, {}
        key = (limit, wire[2:])
        kept = self._kept.get(key)
        if kept is not None:
            return wire[:2] + kept
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = respond(view, query)
        if response is None:
            return self.forwarder.kept(wire, query, self._size(query, limit)) or query
        reply = self._wire(response, query, limit)
        if len(self._kept) >= self.MAX_KEPT:
            self._kept.clear()
        self._kept[key] = reply[2:]
        return reply

    async def handle(self, wire: bytes, limit: int | None) -> bytes | None:
        reply = self.answer(wire, limit)
        if isinstance(reply, dns.message.Message):
            return await self.forwarded(reply, limit)
        return reply

    async def forwarded(self, query: dns.message.Message, limit: int | None) -> bytes:
        """The upstream's answer to a query that is not ours."""
        return self._wire(await self.forwarder.ask(query), query, limit)

    @staticmethod
    def _size(query: dns.message.Message, limit: int | None) -> int:
        return limit or (max(512, query.payload) if query.edns >= 0 else 512)

    @classmethod
    def _wire(cls, response: dns.message.Message, query: dns.message.Message,
              limit: int | None) -> bytes:
        size = cls._size(query, limit)
        try:
            return response.to_wire(max_size=size)
        except dns.exception.TooBig:
            response.flags |= dns.flags.TC
            response.answer, response.authority, response.additional = [], [], []
            return response.to_wire()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        server = self
        answering: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                reply = server.answer(data, None)
                if isinstance(reply, bytes):
                    self.transport.sendto(reply, addr)
                elif reply is not None:
                    async def forward(query=reply):
                        self.transport.sendto(await server.forwarded(query, None), addr)
                    task = asyncio.ensure_future(forward())
                    answering.add(task)
                    task.add_done_callback(answering.discard)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    header = await reader.readexactly(2)
                    wire = await reader.readexactly(struct.unpack(">H", header)[0])
                    reply = await server.handle(wire, 65535)
                    if reply is None:
                        break
                    writer.write(struct.pack(">H", len(reply)) + reply)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        transport, _ = await loop.create_datagram_endpoint(
            Udp, local_addr=(self.address, self.port))
        tcp_server = await asyncio.start_server(tcp, self.address, self.port)
        log.info("cluster DNS answering on %s:%d", self.address, self.port)
        try:
            await asyncio.Event().wait()
        finally:
            transport.close()
            tcp_server.close()


def put_address(address: str) -> str:
    """The cluster DNS address on a dummy interface of this namespace, or on `lo` where the
    kernel has no dummy devices; the interface used (blocking)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        device = DEVICE
        if not ipr.link_lookup(ifname=DEVICE):
            try:
                ipr.link("add", ifname=DEVICE, kind="dummy")
            except Exception as exc:  # no dummy devices here (no module): loopback then
                log.debug("no dummy device (%s): the cluster DNS address goes on lo", exc)
                device = "lo"
        index = ipr.link_lookup(ifname=device)[0]
        try:
            ipr.addr("add", index=index, address=address, prefixlen=32)
        except Exception as exc:
            if "exists" not in str(exc).lower():
                raise
        ipr.link("set", index=index, state="up")
        return device


def resolvers(path: str) -> list[str]:
    """The nameservers of a resolv.conf."""
    servers = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    servers.append(parts[1])
    except OSError:
        pass
    return servers


async def run(cluster_dns: str, domain: str, resolv_conf: str,
              informers: tuple[Informer, Informer, Informer]) -> None:
    """Serve cluster DNS on this node: the address on `k8py-dns`, a view rebuilt from
    `informers` (Services, EndpointSlices, Nodes: the agent runs them, for the proxy and the
    pod network too) when they changed, the listeners."""
    services, slices, node_list = informers
    stale = [True]
    current: list[ClusterView] = []

    def changed(*_objects) -> None:
        stale[0] = True

    def view() -> ClusterView:
        if stale[0] or not current:
            stale[0] = False
            current[:] = [ClusterView(domain, services.list(), slices.list(),
                                      node_list.list())]
        return current[0]

    for informer in informers:
        informer.add_handlers(changed, changed, changed)
    for informer in informers:
        await informer.synced.wait()
    upstream = Forwarder(resolvers(resolv_conf), {cluster_dns})
    while True:  # DNS down must not take the node down: say why, try again
        try:
            device = await asyncio.to_thread(put_address, cluster_dns)
            log.info("cluster DNS address %s on %s", cluster_dns, device)
            await DnsServer(cluster_dns, view, upstream).serve()
        except OSError as exc:
            log.error("cluster DNS cannot serve on %s:53: %s", cluster_dns, exc)
        except Exception as exc:  # netlink refused the address
            log.error("cluster DNS cannot take the address %s: %s", cluster_dns, exc)
        await asyncio.sleep(30.0)
