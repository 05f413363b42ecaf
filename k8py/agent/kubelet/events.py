"""Events about pods, as upstream's kubelet writes them (source component `kubelet`, host the
node).

The same shape the scheduler writes (`involvedObject` with the pod's uid, `reason`, `type`,
`firstTimestamp`/`lastTimestamp`, `count`), plus `involvedObject.fieldPath` naming the
container (`spec.containers{web}`) as upstream does. A repeated event (BackOff, Unhealthy) is
not written again: the existing one's `count` and `lastTimestamp` are bumped, so a crash loop
makes one Event, not hundreds. Writing an Event never fails the caller.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.resources import builtin
from k8py.client.client import Client

log = logging.getLogger(__name__)

EVENTS = builtin("v1", "events")
REMEMBERED = 4096


def field_path(pod: dict[str, Any], container: str | None) -> str | None:
    if container is None:
        return None
    for kind in ("initContainers", "containers"):
        if any(c.get("name") == container for c in pod["spec"].get(kind) or []):
            return f"spec.{kind}{{{container}}}"
    return None


class Recorder:
    def __init__(self, client: Client, node_name: str):
        self.client = client
        self.node_name = node_name
        self._written: dict[tuple, tuple[str, int]] = {}  # key -> (event name, count)

    async def event(self, pod: dict[str, Any], kind: str, reason: str, message: str,
                    container: str | None = None) -> None:
        metadata = pod["metadata"]
        namespace = metadata["namespace"]
        key = (metadata["uid"], container, reason, message)
        now = timestamps.now()
        try:
            known = self._written.get(key)
            if known is not None:
                name, count = known
                try:
                    await self.client.patch(EVENTS, name, {"count": count + 1,
                                                           "lastTimestamp": now}, namespace)
                    self._written[key] = (name, count + 1)
                    return
                except errors.NotFound:
                    pass
            involved = {"apiVersion": "v1", "kind": "Pod", "name": metadata["name"],
                        "namespace": namespace, "uid": metadata["uid"]}
            path = field_path(pod, container)
            if path:
                involved["fieldPath"] = path
            name = f"{metadata['name']}.{uuid.uuid4().hex[:16]}"
            await self.client.create(EVENTS, {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": involved, "reason": reason, "message": message,
                "type": kind, "source": {"component": "kubelet", "host": self.node_name},
                "reportingComponent": "kubelet", "reportingInstance": self.node_name,
                "firstTimestamp": now, "lastTimestamp": now, "count": 1})
            if len(self._written) >= REMEMBERED:
                self._written.pop(next(iter(self._written)))
            self._written[key] = (name, 1)
        except errors.StatusError as exc:
            log.debug("event %s for %s/%s not written: %s", reason, namespace,
                      metadata["name"], exc.message)

    def forget(self, pod_uid: str) -> None:
        for key in [k for k in self._written if k[0] == pod_uid]:
            del self._written[key]
