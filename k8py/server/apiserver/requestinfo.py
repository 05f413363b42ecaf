"""What a request asks for, as upstream's RequestInfoFactory reads it from the URL alone:
resource or not, verb, API group and version, resource, subresource, namespace, name.

Resource requests are /api/<version>/... and /apis/<group>/<version>/... with at least one
segment after the version; everything else (/api, /apis/<group>/<version>, /healthz,
/version, /openapi/v3) is a non-resource request whose verb is the lower-cased HTTP method.
For resources the verb comes from the method (POST create, GET/HEAD get, PUT update, PATCH
patch, DELETE delete), then:
- a GET without a name is `list`, or `watch` when the query says watch (anything but
  `false`/`0`; an empty value is a list, as k8py serves it);
- a DELETE without a name is `deletecollection`;
- the deprecated `/watch/` and `/proxy/` path prefixes set the verb themselves;
- `namespaces/<ns>` followed by `status` or `finalize` is the namespace's own subresource;
  otherwise what follows it is a namespaced resource;
- a list or watch narrowed by `fieldSelector=metadata.name=<x>` names x.

The URL is read as sent: whether the resource exists is not this module's business (the
audit log records requests for unknown resources too). Pure; used by the authorizers
(`authz.request_attributes`) and the audit policy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

# HTTP methods and the verbs they are (the in-process transport maps its calls alike)
VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"}
_SPECIAL_VERBS = ("proxy", "watch")
_NAMESPACE_SUBRESOURCES = ("status", "finalize")


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    verb: str
    resource_request: bool = False
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def long_running(self) -> bool:
        """Upstream's BasicLongRunningRequestCheck: watch and proxy verbs; attach, exec,
        proxy, log and portforward subresources."""
        return self.verb in ("watch", "proxy") or self.subresource in (
            "attach", "exec", "proxy", "log", "portforward")


def request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    parts = [p for p in path.strip("/").split("/")]
    non_resource = RequestInfo(method.lower(), path=path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    group, rest = "", parts[1:]
    if parts[0] == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    verb = VERBS.get(method, "")
    if rest[0] in _SPECIAL_VERBS:
        if len(rest) < 2:  # upstream: "unable to determine kind and namespace from url"
            return RequestInfo(rest[0], True, group, version, path=path)
        verb, rest = rest[0], rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 and verb != "proxy" else ""
    if not name and verb == "get":
        watch = query.get("watch")
        verb = "watch" if watch is not None and watch.lower() not in ("", "0", "false") \
            else "list"
        name = selected_name(query.get("fieldSelector", ""))
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(verb, True, group, version, resource, subresource, namespace, name,
                       path)


def selected_name(field_selector: str) -> str:
    """The name a field selector pins with `metadata.name=x` (or `==`), if a valid path
    segment."""
    for term in field_selector.split(","):
        if "!=" in term:
            continue
        key, sep, value = term.partition("==") if "==" in term else term.partition("=")
        if sep and key.strip() == "metadata.name":
            value = value.strip()
            if value and value not in (".", "..") and "/" not in value and "%" not in value:
                return value
    return ""
