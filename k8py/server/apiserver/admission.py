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
`GenericStore.require_namespace`) and, given the store to read accounts from,
`ServiceAccount` (`serviceaccount.py`: a pod's account, its token volume); the security work
(RBAC-aware admission, NodeRestriction) plugs in here. A plugin can be switched off by name
(`disabled`, upstream's --disable-admission-plugins): the bare API servers of tests that run
no service-account controller switch `ServiceAccount` off, as upstream's integration tests do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from k8py.api import errors
from k8py.api.resources import Resource
from k8py.server.apiserver.authn import User

CREATE, UPDATE, DELETE, CONNECT = "CREATE", "UPDATE", "DELETE", "CONNECT"


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


def default_chain(registry: Any = None, objects: Any = None,
                  disabled: Collection[str] = ()) -> "Chain":
    """NamespaceLifecycle, then ServiceAccount (when given the registry and `ObjectStore`
    it reads accounts from), less the plugins named in `disabled`."""
    plugins: list[Plugin] = [NamespaceLifecycle()]
    if registry is not None and objects is not None:
        from k8py.server.apiserver.serviceaccount import ServiceAccount

        plugins.append(ServiceAccount(registry, objects))
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
