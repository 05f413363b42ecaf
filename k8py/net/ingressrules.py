"""The ingress controller's routing table: a pure function of (IngressClasses, Ingresses,
Services, EndpointSlices), after the networking.k8s.io/v1 Ingress specification and
ingress-nginx where the specification leaves the order open.

Which Ingresses: those whose `spec.ingressClassName` (or the legacy
`kubernetes.io/ingress.class` annotation) names an IngressClass whose controller is
`k8py.io/ingress`, and those with no class at all while such a class is marked default
(`ingressclass.kubernetes.io/is-default-class: "true"`).

Hosts: a rule's host is matched exactly (case-insensitive, the request's port dropped), or,
as `*.example.com`, matches exactly one more DNS label (`a.example.com`, not
`example.com` nor `a.b.example.com`). An exact host wins over a wildcard; a wildcard with
more labels wins over one with fewer; a rule without a host matches any host, last.

Paths, within the chosen host (the rules of every Ingress for that host, merged):
- `Exact`: the path as it is (case-sensitive);
- `Prefix` (and `ImplementationSpecific`, which k8py treats as Prefix): element-wise on
  `/`-separated elements, a trailing `/` ignored, so `/foo/bar` matches `/foo/bar` and
  `/foo/bar/baz`, not `/foo/barbaz`; `/` matches every path;
- the longest matching path wins; at equal length `Exact` wins over `Prefix`; at a tie
  the older Ingress (creation time, then namespace/name) wins, as ingress-nginx does.
Nothing matched: the default backend (`spec.defaultBackend`) of the oldest Ingress that
has one, else 404.

Backends are a Service and a port (number, or the name of a Service port), resolved to the
ready endpoints of its EndpointSlices on the port the slices name after that Service port;
none ready: 503. TLS: `tlsHosts` maps a host (exact or `*.` wildcard) to the
`namespace/secretName` holding its certificate; the first Ingress (by age) naming a host wins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

CONTROLLER = "k8py.io/ingress"
CLASS_NAME = "k8py"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclasses.dataclass(frozen=True)
class Backend:
    """Where a request goes: `namespace/service:port` and its ready endpoints."""
    name: str
    endpoints: tuple[tuple[str, int], ...]


@dataclasses.dataclass(frozen=True)
class PathRule:
    path: str
    exact: bool
    backend: Backend

    def matches(self, path: str) -> bool:
        if self.exact:
            return path == self.path
        prefix = self.path.rstrip("/")
        if not prefix:
            return True
        return path == prefix or path.startswith(prefix + "/") or (
            path.rstrip("/") == prefix)

    @property
    def length(self) -> int:
        return len(self.path) if self.exact else len(self.path.rstrip("/"))


@dataclasses.dataclass(frozen=True)
class Table:
    """The routing table; replaced whole on every change, never altered."""
    hosts: Mapping[str, tuple[PathRule, ...]]  # "" = any host; "*.x" = wildcard
    default: Backend | None = None
    tls_hosts: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def host_rules(self, host: str) -> tuple[PathRule, ...]:
        host = strip_port(host).lower()
        rules = self.hosts.get(host)
        if rules is not None:
            return rules
        parts = host.split(".", 1)
        if len(parts) == 2:
            rules = self.hosts.get("*." + parts[1])
            if rules is not None:
                return rules
        return self.hosts.get("", ())

    def route(self, host: str, path: str) -> Backend | None:
        """The backend of a request for `host` and `path` (no query), or None: 404."""
        for rule in self.host_rules(host):
            if rule.matches(path):
                return rule.backend
        return self.default

    def secret_for(self, server_name: str | None) -> str | None:
        if not server_name:
            return None
        host = server_name.lower()
        if host in self.tls_hosts:
            return self.tls_hosts[host]
        parts = host.split(".", 1)
        return self.tls_hosts.get("*." + parts[1]) if len(parts) == 2 else None


def strip_port(host: str) -> str:
    if host.startswith("["):
        return host[:host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def our_classes(classes: Iterable[Mapping[str, Any]]) -> tuple[set[str], bool]:
    """The names of the IngressClasses this controller serves, and whether one is default."""
    names, default = set(), False
    for item in classes:
        if (item.get("spec") or {}).get("controller") != CONTROLLER:
            continue
        metadata = item.get("metadata") or {}
        names.add(metadata.get("name", ""))
        if (metadata.get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
            default = True
    return names, default


def is_ours(ingress: Mapping[str, Any], names: set[str], default: bool) -> bool:
    cls = (ingress.get("spec") or {}).get("ingressClassName") or \
        ((ingress.get("metadata") or {}).get("annotations") or {}).get(LEGACY_CLASS_ANNOTATION)
    return cls in names if cls else default


def _age(ingress: Mapping[str, Any]) -> tuple[str, str, str]:
    metadata = ingress.get("metadata") or {}
    return (metadata.get("creationTimestamp") or "", metadata.get("namespace", ""),
            metadata.get("name", ""))


class _Resolver:
    """Service backends to endpoints, from Services and EndpointSlices."""

    def __init__(self, services: Iterable[Mapping[str, Any]],
                 slices: Iterable[Mapping[str, Any]]):
        self.services = {((s.get("metadata") or {}).get("namespace", ""),
                          (s.get("metadata") or {}).get("name", "")): s for s in services}
        self.slices: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
        for item in slices:
            metadata = item.get("metadata") or {}
            owner = (metadata.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if owner and item.get("addressType", "IPv4") == "IPv4":
                self.slices.setdefault((metadata.get("namespace", ""), owner), []).append(item)

    def backend(self, namespace: str, spec: Mapping[str, Any] | None) -> Backend | None:
        service_ref = (spec or {}).get("service")
        if not service_ref:
            return None  # resource backends: nothing k8py can send HTTP to
        name = service_ref.get("name", "")
        wanted = service_ref.get("port") or {}
        label = f"{namespace}/{name}:{wanted.get('number') or wanted.get('name', '')}"
        service = self.services.get((namespace, name))
        if service is None or (service.get("spec") or {}).get("type") == "ExternalName":
            return Backend(label, ())
        port = next((p for p in (service.get("spec") or {}).get("ports") or ()
                     if (wanted.get("number") and p.get("port") == wanted["number"])
                     or (wanted.get("name") and p.get("name") == wanted["name"])), None)
        if port is None or port.get("protocol", "TCP") != "TCP":
            return Backend(label, ())
        endpoints = []
        for item in self.slices.get((namespace, name), ()):
            number = next((p.get("port") for p in item.get("ports") or ()
                           if (p.get("name") or "") == (port.get("name") or "")
                           and p.get("protocol", "TCP") == "TCP"), None)
            if not number:
                continue
            for endpoint in item.get("endpoints") or ():
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                endpoints.extend((address, int(number))
                                 for address in endpoint.get("addresses") or ())
        return Backend(label, tuple(sorted(set(endpoints))))


def build(classes: Iterable[Mapping[str, Any]], ingresses: Iterable[Mapping[str, Any]],
          services: Iterable[Mapping[str, Any]],
          slices: Iterable[Mapping[str, Any]]) -> Table:
    names, default = our_classes(classes)
    resolver = _Resolver(services, slices)
    ordered = sorted((i for i in ingresses if is_ours(i, names, default)), key=_age)
    hosts: dict[str, list[tuple[int, int, int, PathRule]]] = {}
    default_backend: Backend | None = None
    tls_hosts: dict[str, str] = {}
    for rank, ingress in enumerate(ordered):
        metadata, spec = ingress.get("metadata") or {}, ingress.get("spec") or {}
        namespace = metadata.get("namespace", "")
        if default_backend is None and spec.get("defaultBackend"):
            default_backend = resolver.backend(namespace, spec["defaultBackend"])
        for tls in spec.get("tls") or ():
            if tls.get("secretName"):
                for host in tls.get("hosts") or ():
                    tls_hosts.setdefault(host.lower(), f"{namespace}/{tls['secretName']}")
        for rule in spec.get("rules") or ():
            entries = hosts.setdefault((rule.get("host") or "").lower(), [])
            for path in (rule.get("http") or {}).get("paths") or ():
                backend = resolver.backend(namespace, path.get("backend"))
                if backend is None:
                    continue
                exact = path.get("pathType") == "Exact"
                item = PathRule(path.get("path") or "/", exact, backend)
                # longest first, Exact before Prefix, then the older Ingress, then order
                entries.append((-item.length, 0 if exact else 1, rank * 10000 + len(entries),
                                item))
    return Table({host: tuple(e[3] for e in sorted(entries, key=lambda e: e[:3]))
                  for host, entries in hosts.items()}, default_backend, tls_hosts)
