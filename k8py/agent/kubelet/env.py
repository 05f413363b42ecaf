"""A container's environment, as upstream's kubelet builds it (`makeEnvironmentVariables`).

Order of resolution, which decides what wins:
1. `envFrom` sources in order (ConfigMap data, Secret data; optional `prefix`; keys that are
   not valid variable names are skipped, as upstream, which reports them in an Event);
2. `env` in order: a `value` is expanded (`$(VAR)` from the variables so far, then the
   service variables), else `valueFrom` is resolved: `fieldRef`, `resourceFieldRef`
   (limits default to the node's allocatable), `configMapKeyRef`, `secretKeyRef`;
3. service link variables (`KUBERNETES_SERVICE_HOST`, ... `<SVC>_PORT_<n>_TCP_ADDR`) not
   already set: the `kubernetes` Service of `default` always, the namespace's own Services
   when `enableServiceLinks` (default true).

A missing non-optional source raises `ContainerConfigError` with upstream's message
(`configmap "x" not found`, `couldn't find key y in ConfigMap default/x`); the kubelet reports
it as the container's `CreateContainerConfigError`. An optional missing source is skipped.

`lookup(kind, namespace, name)` is async and returns the object or None (kind is "ConfigMap"
or "Secret"); `client_lookup(client)` backs it with API reads; the kubelet may back it with
informers instead. Secret values are bytes and stay bytes (a CRI KeyValue carries bytes); they
are held as surrogate-escaped text only to expand `$(VAR)`. Nothing here logs a value.

The downward API values (`field_value`, `resource_value`) live here too: volumes use them.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from k8py.api import errors, quantity
from k8py.api.resources import builtin
from k8py.runtime import cri_pb2

Lookup = Callable[[str, str, str], Awaitable[dict[str, Any] | None]]

CONFIGMAPS = builtin("v1", "configmaps")
SECRETS = builtin("v1", "secrets")
MASTER_SERVICES = ("kubernetes",)
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ContainerConfigError(Exception):
    """The container's configuration cannot be made (CreateContainerConfigError); the message
    is upstream's, shown in the container's waiting state."""


def client_lookup(client) -> Lookup:
    """A lookup reading ConfigMaps and Secrets from the API (None when not found)."""
    resources = {"ConfigMap": CONFIGMAPS, "Secret": SECRETS}

    async def lookup(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await client.get(resources[kind], name, namespace)
        except errors.NotFound:
            return None
    return lookup


# --- $(VAR) expansion (upstream's third_party/forked/golang/expansion) ---------------------

def expand(text: str, mapping: Callable[[str], str | None]) -> str:
    """`$(NAME)` → its value (left as is when unknown); `$$` → `$`; other `$` kept."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            advance = 1
            if nxt == "$":
                out.append("$")
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                else:
                    name = text[cursor + 2:close]
                    value = mapping(name)
                    out.append(f"$({name})" if value is None else value)
                    advance = close - cursor
            else:
                out.append("$" + nxt)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def mapping_for(*contexts: dict[str, str]) -> Callable[[str], str | None]:
    def mapping(name: str) -> str | None:
        for context in contexts:
            if name in context:
                return context[name]
        return None
    return mapping


# --- the downward API ------------------------------------------------------------------------

def _format_map(values: dict[str, str]) -> str:
    """Labels/annotations as the downward API prints them: sorted `key="value"` lines."""
    return "\n".join(f"{key}={json.dumps(values[key], ensure_ascii=False)}"
                     for key in sorted(values))


def host_ips(node: dict[str, Any] | None) -> list[str]:
    """The node's IPs as the kubelet reports status.hostIPs: InternalIPs, else ExternalIPs."""
    addresses = ((node or {}).get("status") or {}).get("addresses") or []
    for kind in ("InternalIP", "ExternalIP"):
        found = [a["address"] for a in addresses if a.get("type") == kind]
        if found:
            return found
    return []


def pod_ips_of(pod: dict[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    ips = [entry["ip"] for entry in status.get("podIPs") or [] if entry.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return ips


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


def field_value(pod: dict[str, Any], path: str, node: dict[str, Any] | None = None,
                pod_ips: list[str] | None = None) -> str:
    """A `fieldRef` path's value for `pod`, as upstream (`podFieldSelectorRuntimeValue`)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    ips = pod_ips if pod_ips is not None else pod_ips_of(pod)
    match path:
        case "metadata.name" | "metadata.namespace" | "metadata.uid":
            return meta.get(path.split(".", 1)[1], "")
        case "metadata.labels" | "metadata.annotations":
            return _format_map(meta.get(path.split(".", 1)[1]) or {})
        case "spec.nodeName":
            return spec.get("nodeName", "")
        case "spec.serviceAccountName":
            return spec.get("serviceAccountName", "")
        case "status.podIP":
            return ips[0] if ips else ""
        case "status.podIPs":
            return ",".join(ips)
        case "status.hostIP":
            found = host_ips(node)
            return found[0] if found else ""
        case "status.hostIPs":
            return ",".join(host_ips(node))
    subscript = _SUBSCRIPT.match(path)
    if subscript:
        return (meta.get(subscript.group(1)) or {}).get(subscript.group(2), "")
    raise ContainerConfigError(f"unsupported fieldPath: {path}")


def resource_value(container: dict[str, Any], resource: str, divisor: str | None,
                   node: dict[str, Any] | None = None) -> str:
    """A `resourceFieldRef`'s value: limits default to the node's allocatable, as upstream's
    `defaultPodLimitsForDownwardAPI`; rounded up in units of `divisor` (default 1)."""
    resources = container.get("resources") or {}
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise ContainerConfigError(f"unsupported container resource : {resource}")
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "limits":
        value = (((node or {}).get("status") or {}).get("allocatable") or {}).get(name)
    if name == "cpu":
        amount = quantity.milli(value or 0)
        per = quantity.milli(divisor or "1") or 1000
    else:
        amount = quantity.amount(name, value or 0)
        per = quantity.amount(name, divisor or "1") or 1
    return str(int(math.ceil(amount / per)))


# --- service links ---------------------------------------------------------------------------

def _var_name(name: str) -> str:
    return name.replace("-", "_").upper()


def service_env(services: Iterable[dict[str, Any]], namespace: str,
                enable_service_links: bool = True) -> dict[str, str]:
    """Upstream's service environment variables for a pod in `namespace`."""
    chosen: dict[str, dict[str, Any]] = {}
    for service in services:
        meta, spec = service.get("metadata") or {}, service.get("spec") or {}
        if spec.get("clusterIP") in (None, "", "None") or not spec.get("ports"):
            continue
        name = meta.get("name", "")
        if meta.get("namespace") == "default" and name in MASTER_SERVICES:
            chosen.setdefault(name, service)
        elif meta.get("namespace") == namespace and enable_service_links:
            chosen[name] = service
    result: dict[str, str] = {}
    for name, service in chosen.items():
        spec = service["spec"]
        ip, ports, prefix = spec["clusterIP"], spec["ports"], _var_name(name)
        result[f"{prefix}_SERVICE_HOST"] = ip
        result[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                result[f"{prefix}_SERVICE_PORT_{_var_name(port['name'])}"] = str(port["port"])
        host = f"[{ip}]" if ":" in ip else ip
        for i, port in enumerate(ports):
            protocol = (port.get("protocol") or "TCP")
            url = f"{protocol.lower()}://{host}:{port['port']}"
            if i == 0:
                result[f"{prefix}_PORT"] = url
            port_prefix = f"{prefix}_PORT_{port['port']}_{protocol.upper()}"
            result[port_prefix] = url
            result[port_prefix + "_PROTO"] = protocol.lower()
            result[port_prefix + "_PORT"] = str(port["port"])
            result[port_prefix + "_ADDR"] = ip
    return result


# --- the environment -------------------------------------------------------------------------

def _secret_text(value: str) -> str:
    """A Secret's base64 value as text that round-trips to the exact bytes."""
    return base64.b64decode(value).decode("utf-8", "surrogateescape")


class _Sources:
    """ConfigMaps and Secrets read once per resolution."""

    def __init__(self, lookup: Lookup, namespace: str):
        self.lookup, self.namespace = lookup, namespace
        self.cache: dict[tuple[str, str], dict[str, Any] | None] = {}

    async def get(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        """The source's data as text, None if optional and missing."""
        if (kind, name) not in self.cache:
            self.cache[kind, name] = await self.lookup(kind, self.namespace, name)
        obj = self.cache[kind, name]
        if obj is None:
            if optional:
                return None
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        data = obj.get("data") or {}
        if kind == "Secret":
            return {key: _secret_text(value) for key, value in data.items()}
        return dict(data)


async def resolve_env(pod: dict[str, Any], container: dict[str, Any], lookup: Lookup,
                      node: dict[str, Any] | None, *, services: Iterable[dict[str, Any]] = (),
                      pod_ips: list[str] | None = None) -> list[cri_pb2.KeyValue]:
    """The container's environment as CRI key/values (see the module docstring)."""
    namespace = pod["metadata"].get("namespace", "default")
    spec = pod.get("spec") or {}
    sources = _Sources(lookup, namespace)
    service_vars = service_env(services, namespace, spec.get("enableServiceLinks", True))
    env: dict[str, str] = {}

    for env_from in container.get("envFrom") or []:
        ref = env_from.get("configMapRef") or env_from.get("secretRef")
        if not ref:
            continue
        kind = "ConfigMap" if "configMapRef" in env_from else "Secret"
        data = await sources.get(kind, ref.get("name", ""), bool(ref.get("optional")))
        if data is None:
            continue
        prefix = env_from.get("prefix") or ""
        for key, value in data.items():
            if _ENV_NAME.match(prefix + key):
                env[prefix + key] = value

    mapping = mapping_for(env, service_vars)
    for var in container.get("env") or []:
        name, value = var["name"], var.get("value") or ""
        source = var.get("valueFrom")
        if value:
            value = expand(value, mapping)
        elif source:
            if "fieldRef" in source:
                value = field_value(pod, source["fieldRef"]["fieldPath"], node, pod_ips)
            elif "resourceFieldRef" in source:
                ref = source["resourceFieldRef"]
                target = container
                if ref.get("containerName") and ref["containerName"] != container.get("name"):
                    target = _container_named(pod, ref["containerName"]) or container
                value = resource_value(target, ref["resource"], ref.get("divisor"), node)
            elif "configMapKeyRef" in source or "secretKeyRef" in source:
                kind = "ConfigMap" if "configMapKeyRef" in source else "Secret"
                ref = source.get("configMapKeyRef") or source["secretKeyRef"]
                optional = bool(ref.get("optional"))
                data = await sources.get(kind, ref.get("name", ""), optional)
                if data is None:
                    continue
                if ref["key"] not in data:
                    if optional:
                        continue
                    raise ContainerConfigError(
                        f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
                value = data[ref["key"]]
        env[name] = value

    for name, value in service_vars.items():
        env.setdefault(name, value)
    return [cri_pb2.KeyValue(key=key, value=value.encode("utf-8", "surrogateescape"))
            for key, value in env.items()]


def _container_named(pod: dict[str, Any], name: str) -> dict[str, Any] | None:
    spec = pod.get("spec") or {}
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if container.get("name") == name:
            return container
    return None


def env_map(envs: Iterable[cri_pb2.KeyValue]) -> dict[str, str]:
    """CRI key/values as a dict of text (for `$(VAR)` in command and args)."""
    return {kv.key: bytes(kv.value).decode("utf-8", "surrogateescape") for kv in envs}
