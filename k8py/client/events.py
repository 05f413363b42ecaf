"""Events about objects, as upstream's event recorder (client-go `tools/record`) writes them:
core/v1 Events with `involvedObject` (apiVersion, kind, name, namespace, uid, and a
`fieldPath` such as `spec.containers{web}` when given), `reason`, `message`, `type` (Normal
or Warning), `source.component` (and `host` for a kubelet), `firstTimestamp`,
`lastTimestamp`, `count`. The kubelet, the scheduler and every controller write through one
`EventRecorder`.

- An Event of a cluster-scoped object goes to the `default` namespace, as upstream's.
- Its name is the object's name, a dot, and the time in hexadecimal nanoseconds (upstream's).
- The same event again (same object, field path, reason and message) is not written again:
  the existing one's `count` and `lastTimestamp` are bumped, so a crash loop makes one Event,
  not hundreds. The recorder remembers the last REMEMBERED events for that.
- Writing an Event never fails the caller: an error is logged at debug and dropped.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from k8py.api import errors, timestamps
from k8py.api.resources import builtin
from k8py.client.client import Client

log = logging.getLogger(__name__)

EVENTS = builtin("v1", "events")
REMEMBERED = 4096


class EventRecorder:
    def __init__(self, client: Client, component: str, host: str = ""):
        self.client = client
        self.component = component
        self.host = host
        self._written: dict[tuple, tuple[str, str, int]] = {}  # key -> (ns, name, count)

    async def event(self, obj: dict[str, Any], kind: str, reason: str, message: str,
                    field_path: str | None = None, action: str | None = None) -> None:
        """Record that `reason` happened to obj (kind: "Normal" or "Warning")."""
        metadata = obj["metadata"]
        key = (metadata.get("uid"), field_path, reason, message)
        now = timestamps.now()
        try:
            known = self._written.get(key)
            if known is not None:
                namespace, name, count = known
                try:
                    await self.client.patch(EVENTS, name, {"count": count + 1,
                                                           "lastTimestamp": now}, namespace)
                    self._written[key] = (namespace, name, count + 1)
                    return
                except errors.NotFound:
                    pass  # expired meanwhile: write a new one
            namespace = metadata.get("namespace") or "default"
            involved = {"kind": obj.get("kind", ""), "namespace": metadata.get("namespace"),
                        "name": metadata["name"], "uid": metadata.get("uid"),
                        "apiVersion": obj.get("apiVersion", "")}
            if not involved["namespace"]:
                del involved["namespace"]
            if field_path:
                involved["fieldPath"] = field_path
            source = {"component": self.component}
            if self.host:
                source["host"] = self.host
            name = f"{metadata['name']}.{time.time_ns():x}"
            event = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": involved, "reason": reason, "message": message,
                "source": source, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                "type": kind, "reportingComponent": self.component,
                "reportingInstance": self.host or self.component}
            if action:
                event["action"] = action
            await self.client.create(EVENTS, event)
            if len(self._written) >= REMEMBERED:
                self._written.pop(next(iter(self._written)))
            self._written[key] = (namespace, name, 1)
        except errors.StatusError as exc:
            log.debug("event %s for %s not written: %s", reason, metadata.get("name"),
                      exc.message)

    def forget(self, uid: str) -> None:
        """Drop what is remembered of an object's events (it is gone)."""
        for key in [k for k in self._written if k[0] == uid]:
            del self._written[key]
