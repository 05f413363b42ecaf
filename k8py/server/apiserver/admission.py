"""Admission: the chain every write passes through, in upstream's two phases.

A write (create, update, patch, apply, delete, and the subresources that write: status,
scale, binding, eviction, ephemeralcontainers, approval, finalize) is described by
`Attributes` and shown to each plugin twice:
- `admit` (mutating): before the kind's strategy prepares the object; a plugin may return a
  changed object, which the next plugin and the strategy see;
- `validate` (validating): after the strategy prepared and validated it, just before the
  store; a plugin may only refuse.
A plugin refuses by raising a `k8py.api.errors.StatusError` (upstream answers 403 Forbidden
for most refusals); the write then does nothing. The default chain (`default_chain`) holds
`NamespaceLifecycle`'s rule that the system namespaces are never deleted (content in a
missing or terminating namespace is refused by the write path itself,
`GenericStore.require_namespace`), then, given the store, `LimitRanger` (`limitranger`),
`ServiceAccount` (`serviceaccount.py`: a pod's account, its token volume), `PodSecurity`
(`podsecurity`), `DefaultStorageClass` (`defaultstorageclass`: a claim's default class),
`StorageObjectInUseProtection` (`storageprotection`: the claims' and volumes' finalizers),
`DefaultIngressClass` (`defaultingressclass`: an Ingress's default class) and
last, as upstream orders it, `ResourceQuota` (`resourcequota`). The API
server adds, before ResourceQuota, the plugins that consult its authorizers
(`NodeRestriction`, `RBACEscalation`: `RestHandler.use_authorization`). A plugin can be
switched off by name (`disabled`, upstream's --disable-admission-plugins): the bare API
servers of tests that run no service-account controller switch `ServiceAccount` off, as
upstream's integration tests do. `forbidden` words a refusal as upstream's
admission.NewForbidden does.

A plugin may also answer without refusing, as upstream's do through the request context:
`Attributes.warn` adds a warning (an HTTP `Warning: 299 - "<text>"` header on the answer,
as `fieldvalidation.with_warnings` writes them; the in-process transport drops them) and
`Attributes.annotate` an audit annotation. Both land in containers the request owns (the
`WriteContext` of the write path; over HTTP, the request's `fieldvalidation.WARNINGS_KEY`
list and `AUDIT_ANNOTATIONS_KEY` dict), shared by every phase and plugin of the write, so
the audit log reads `request[AUDIT_ANNOTATIONS_KEY]` once the request is done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from aiohttp import web

from k8py.api import errors
from k8py.api.resources import Resource
from k8py.server.apiserver import podsecurity
from k8py.server.apiserver.authn import User

CREATE, UPDATE, DELETE, CONNECT = "CREATE", "UPDATE", "DELETE", "CONNECT"

# the audit annotations admission added to a request (key → value), for the audit log
AUDIT_ANNOTATIONS_KEY = web.RequestKey("audit_annotations", dict)


@dataclasses.dataclass(frozen=True)
class Attributes:
    """What is being written, by whom (upstream's admission.Attributes)."""
    operation: str
    resource: Resource
    subresource: str | None
    namespace: str | None
    name: str | None
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    user: User | None
    dry_run: bool = False
    # what the plugins tell the client and the audit log: the request's own containers
    warnings: list[str] = dataclasses.field(default_factory=list)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)

    def warn(self, text: str) -> None:
        """A warning for the client; each text once (upstream's warning recorder)."""
        if text not in self.warnings:
            self.warnings.append(text)

    def annotate(self, key: str, value: str) -> None:
        """An audit annotation; the first value of a key stands (upstream's)."""
        self.annotations.setdefault(key, value)


class Plugin(Protocol):
    name: str

    async def admit(self, attributes: Attributes) -> dict[str, Any] | None:
        """The object as this plugin wants it (None: unchanged); raise to refuse."""

    async def validate(self, attributes: Attributes) -> None:
        """Raise to refuse."""


class NamespaceLifecycle:
    """Upstream's NamespaceLifecycle plugin, its immortal namespaces: `default`,
    `kube-system` and `kube-public` may not be deleted."""

    name = "NamespaceLifecycle"
    IMMORTAL = frozenset({"default", "kube-system", "kube-public"})

    async def admit(self, attributes: Attributes) -> dict[str, Any] | None:
        return None

    async def validate(self, attributes: Attributes) -> None:
        resource = attributes.resource
        if attributes.operation == DELETE and resource.group == "" and \
                resource.plural == "namespaces" and not attributes.subresource and \
                attributes.name in self.IMMORTAL:
            raise errors.Forbidden(
                f'namespaces "{attributes.name}" is forbidden: this namespace may not be '
                "deleted", name=attributes.name, kind="namespaces")


def forbidden(attributes: Attributes, message: str) -> errors.Forbidden:
    """`<resource> "<name>" is forbidden: <message>`: the name is the request's, else the
    object's, else its generateName, else "Unknown" (admission.NewForbidden)."""
    name = attributes.name
    if not name:
        metadata = (attributes.object or {}).get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        name = metadata.get("name") or metadata.get("generateName") or "Unknown"
    resource = attributes.resource
    qualified = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    return errors.Forbidden(f'{qualified} "{name}" is forbidden: {message}', name=name,
                            group=resource.group, kind=resource.plural)


def default_chain(registry: Any = None, objects: Any = None,
                  disabled: Collection[str] = ()) -> "Chain":
    """NamespaceLifecycle, then (when given the registry and the `ObjectStore` they read)
    LimitRanger, ServiceAccount, PodSecurity, DefaultStorageClass,
    StorageObjectInUseProtection, DefaultIngressClass and last ResourceQuota,
    less the plugins named in `disabled`."""
    plugins: list[Plugin] = [NamespaceLifecycle()]
    if registry is not None and objects is not None:
        # imported here: the plugins import this module for Attributes
        from k8py.server.apiserver.defaultingressclass import DefaultIngressClass
        from k8py.server.apiserver.defaultstorageclass import DefaultStorageClass
        from k8py.server.apiserver.limitranger import LimitRanger
        from k8py.server.apiserver.resourcequota import ResourceQuota
        from k8py.server.apiserver.serviceaccount import ServiceAccount
        from k8py.server.apiserver.storageprotection import StorageObjectInUseProtection

        plugins += [LimitRanger(objects), ServiceAccount(registry, objects),
                    podsecurity.PodSecurity(registry, objects), DefaultStorageClass(objects),
                    StorageObjectInUseProtection(), DefaultIngressClass(objects),
                    ResourceQuota(objects)]
    return Chain([p for p in plugins if p.name not in disabled])


class Chain:
    """The plugins, in order: every `admit`, then (after the strategy) every `validate`."""

    def __init__(self, plugins: Sequence[Plugin] = ()):
        self.plugins = list(plugins)

    async def admit(self, attributes: Attributes) -> dict[str, Any] | None:
        """The object after every mutating plugin (attributes.object when none changed it)."""
        obj = attributes.object
        for plugin in self.plugins:
            changed = await plugin.admit(dataclasses.replace(attributes, object=obj))
            if changed is not None:
                obj = changed
        return obj

    async def validate(self, attributes: Attributes) -> None:
        for plugin in self.plugins:
            await plugin.validate(attributes)
