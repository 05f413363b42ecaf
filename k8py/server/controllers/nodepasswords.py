"""Node passwords go with their Nodes (k3s's node password controller): when a Node is
deleted, the Secret `<node>.node-password.k8py` in kube-system that remembers the password it
joined with is deleted too, so the name can join again from another host."""

from __future__ import annotations

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.informer import split_key
from k8py.server.controllers.base import Controller

NODES = builtin("v1", "nodes")
SECRETS = builtin("v1", "secrets")
SUFFIX = ".node-password.k8py"


class NodePasswordController(Controller):
    name = "node-password"
    service_account = "node-password-controller"
    workers = 1

    def setup(self) -> None:
        self.nodes = self.informer(NODES)
        self.nodes.add_handlers(None, None, self.enqueue_object)

    async def reconcile(self, key: str) -> float | None:
        _, name = split_key(key)
        if self.nodes.get_by_name(None, name) is not None:
            return None  # it came back
        try:
            await self.client.delete(SECRETS, name + SUFFIX, "kube-system")
        except errors.NotFound:
            pass
        return None
