"""ServiceAccounts (upstream's serviceaccounts controller): every active namespace has a
ServiceAccount named `default`, recreated if it is deleted.

The work key is a namespace name; a namespace being added, or a `default` ServiceAccount
being deleted, queues it. A namespace that is terminating gets nothing new (the API server
would refuse it anyway). Tokens are not made here: since v1.24 upstream no longer creates
token Secrets for service accounts either.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.server.controllers.base import Controller

NAMESPACES = builtin("v1", "namespaces")
SERVICE_ACCOUNTS = builtin("v1", "serviceaccounts")
DEFAULT = "default"


class ServiceAccountController(Controller):
    name = "serviceaccount"
    service_account = "service-account-controller"
    workers = 2

    def setup(self) -> None:
        self.namespaces = self.informer(NAMESPACES)
        self.namespaces.add_handlers(self._namespace_changed,
                                     lambda old, new: self._namespace_changed(new))
        self.accounts = self.informer(SERVICE_ACCOUNTS)
        self.accounts.add_handlers(on_delete=self._account_deleted)

    def _namespace_changed(self, namespace: dict[str, Any]) -> None:
        self.enqueue(namespace["metadata"]["name"])

    def _account_deleted(self, account: dict[str, Any]) -> None:
        if account["metadata"]["name"] == DEFAULT:
            self.enqueue(account["metadata"]["namespace"])

    async def reconcile(self, name: str) -> float | None:
        namespace = self.namespaces.get(name)
        if namespace is None or namespace["metadata"].get("deletionTimestamp") or \
                (namespace.get("status") or {}).get("phase") == "Terminating":
            return None
        if self.accounts.get_by_name(name, DEFAULT) is not None:
            return None
        try:
            await self.client.create(SERVICE_ACCOUNTS, {
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": DEFAULT, "namespace": name}}, name)
        except errors.AlreadyExists:
            pass  # the cache was behind
        except errors.Forbidden:
            pass  # the namespace started terminating meanwhile
        return None
