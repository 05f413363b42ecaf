"""Discovery documents: `/version`, `/api`, `/apis`, and per-group-version resource lists.

kubectl asks `/api` and `/apis` for aggregated discovery (`apidiscovery.k8s.io/v2`); when the
Accept header offers it, the answer is an `APIGroupDiscoveryList` with exactly the content
type kubectl checks for, and kubectl needs nothing more. Otherwise (the Python client) the
answer is the legacy `APIVersions`/`APIGroupList`, and clients fetch each
`/api/v1`, `/apis/<group>/<version>` as an `APIResourceList`. All are built from the same
resource registry, so they cannot disagree.
"""

from __future__ import annotations

import platform
from typing import Any

from k8py import KUBERNETES_VERSION, __version__
from k8py.api.resources import Registry, Resource

AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> bool:
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")}
        if "g=apidiscovery.k8s.io" in params and "v=v2" in params and \
                "as=APIGroupDiscoveryList" in params:
            return True
    return False


def version_info() -> dict[str, str]:
    major, minor, patch = KUBERNETES_VERSION.lstrip("v").split(".")
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"{KUBERNETES_VERSION}+k8py",
        "gitCommit": f"k8py-{__version__}",
        "gitTreeState": "clean",
        "buildDate": "2026-11-26T00:00:00Z",
        "goVersion": f"python{platform.python_version()}",
        "compiler": "cpython",
        "platform": f"linux/{arch}",
    }


def api_versions() -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = []
    for group, versions in registry.groups().items():
        if not group:
            continue
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    resources = []
    for r in registry.in_group_version(group, version):
        resources.append(_legacy_entry(r))
        for sub in r.subresources:
            entry = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced}
            # A subresource of another group's kind names it (kubectl drain evicts only
            # when pods/eviction says policy/v1; otherwise it deletes).
            g, v = _sub_group_version(r, sub)
            if (g, v) != (r.group, r.version):
                entry.update(group=g, version=v)
            resources.append({**entry, "kind": _sub_kind(r, sub), "verbs": _sub_verbs(sub)})
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _legacy_entry(r: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": list(r.verbs),
    }
    return _with_names(entry, r)


def _with_names(entry: dict[str, Any], r: Resource) -> dict[str, Any]:
    """Short names and categories, present only when the resource has them (both forms)."""
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    return entry


_STREAM_KINDS = {"exec": "PodExecOptions", "attach": "PodAttachOptions",
                 "portforward": "PodPortForwardOptions"}


def _sub_kind(r: Resource, sub: str) -> str:
    if sub in _STREAM_KINDS and r.kind == "Pod":
        return _STREAM_KINDS[sub]
    return {"scale": "Scale", "binding": "Binding", "eviction": "Eviction",
            "token": "TokenRequest"}.get(sub, r.kind)


def _sub_group_version(r: Resource, sub: str) -> tuple[str, str]:
    if sub == "scale":
        return "autoscaling", "v1"
    if sub == "eviction":
        return "policy", "v1"
    if sub == "token":
        return "authentication.k8s.io", "v1"
    return r.group, r.version


def _sub_verbs(sub: str) -> list[str]:
    if sub in ("binding", "eviction", "token"):
        return ["create"]
    if sub == "log":
        return ["get"]
    if sub in ("exec", "attach", "portforward"):
        return ["create", "get"]
    if sub == "finalize":
        return ["update"]
    return ["get", "patch", "update"]


def aggregated(registry: Registry, legacy: bool) -> dict[str, Any]:
    """The APIGroupDiscoveryList for `/api` (legacy=True: the core group) or `/apis`."""
    items = []
    for group, versions in registry.groups().items():
        if bool(group) == legacy:
            continue
        version_entries = []
        for version in versions:
            resources = []
            for r in registry.in_group_version(group, version):
                entry: dict[str, Any] = {
                    "resource": r.plural,
                    "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                    "scope": "Namespaced" if r.namespaced else "Cluster",
                    "singularResource": r.singular,
                    "verbs": list(r.verbs),
                }
                _with_names(entry, r)
                if r.subresources:
                    entry["subresources"] = []
                    for sub in r.subresources:
                        g, v = _sub_group_version(r, sub)
                        entry["subresources"].append({
                            "subresource": sub,
                            "responseKind": {"group": g, "version": v, "kind": _sub_kind(r, sub)},
                            "verbs": _sub_verbs(sub),
                        })
                resources.append(entry)
            version_entries.append(
                {"version": version, "resources": resources, "freshness": "Current"}
            )
        items.append({"metadata": {"name": group}, "versions": version_entries})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
