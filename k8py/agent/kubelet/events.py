"""Events about pods, as upstream's kubelet writes them: source component `kubelet`, host the
node, and `involvedObject.fieldPath` naming the container (`spec.containers{web}`). The
writing, and the folding of repeats into one Event's `count`, is `k8py.client.events`."""

from __future__ import annotations

from typing import Any

from k8py.client.client import Client
from k8py.client.events import EventRecorder


def field_path(pod: dict[str, Any], container: str | None) -> str | None:
    if container is None:
        return None
    for kind in ("initContainers", "containers"):
        if any(c.get("name") == container for c in pod["spec"].get(kind) or []):
            return f"spec.{kind}{{{container}}}"
    return None


class Recorder:
    def __init__(self, client: Client, node_name: str):
        self.node_name = node_name
        self._events = EventRecorder(client, "kubelet", host=node_name)

    async def event(self, pod: dict[str, Any], kind: str, reason: str, message: str,
                    container: str | None = None) -> None:
        pod = {"apiVersion": "v1", "kind": "Pod", **pod}
        await self._events.event(pod, kind, reason, message, field_path(pod, container))

    def forget(self, pod_uid: str) -> None:
        self._events.forget(pod_uid)
