"""The DefaultStorageClass admission plugin (upstream's
plugin/pkg/admission/storage/storageclass/setdefault): a PersistentVolumeClaim created without
a class gets the default StorageClass's name in `spec.storageClassName`.

"Without a class" means `storageClassName` absent (or null) and no beta
`volume.beta.kubernetes.io/storage-class` annotation: an empty string asks for no class and
is left alone. The default is a class annotated `storageclass.kubernetes.io/is-default-class:
"true"` (or the beta `storageclass.beta.kubernetes.io/is-default-class`); with several the
newest wins, ties broken by name, as upstream since 1.26. No default: the claim is unchanged.
The classes are read from the store at each create, so a new default applies at once.
"""

from __future__ import annotations

from typing import Any

from k8py.api.resources import builtin
from k8py.server.apiserver.admission import CREATE, Attributes

CLASSES = builtin("storage.k8s.io/v1", "storageclasses")
IS_DEFAULT = ("storageclass.kubernetes.io/is-default-class",
              "storageclass.beta.kubernetes.io/is-default-class")
BETA_CLASS = "volume.beta.kubernetes.io/storage-class"


def default_class(classes: list[dict[str, Any]],
                  annotations: tuple[str, ...] = IS_DEFAULT) -> dict[str, Any] | None:
    """The default among `classes` (StorageClasses, or IngressClasses with their own
    annotation): newest first, then by name."""
    defaults = [c for c in classes
                if any((c["metadata"].get("annotations") or {}).get(a) == "true"
                       for a in annotations)]
    if not defaults:
        return None
    # newest first, then by name (timestamps are RFC 3339 UTC: they sort as text)
    defaults.sort(key=lambda c: c["metadata"]["name"])
    defaults.sort(key=lambda c: c["metadata"].get("creationTimestamp") or "", reverse=True)
    return defaults[0]


class DefaultStorageClass:
    name = "DefaultStorageClass"

    def __init__(self, objects):
        self.objects = objects  # storage.ObjectStore

    async def admit(self, attributes: Attributes) -> dict[str, Any] | None:
        resource, claim = attributes.resource, attributes.object
        if attributes.operation != CREATE or attributes.subresource or resource.group or \
                resource.plural != "persistentvolumeclaims" or not isinstance(claim, dict):
            return None
        spec = claim.get("spec")
        metadata = claim.get("metadata")
        if not isinstance(spec, dict) or spec.get("storageClassName") is not None or \
                (isinstance(metadata, dict) and
                 BETA_CLASS in (metadata.get("annotations") or {})):
            return None
        classes, _, _ = await self.objects.list(CLASSES, None)
        chosen = default_class(classes)
        if chosen is None:
            return None
        return {**claim, "spec": {**spec, "storageClassName": chosen["metadata"]["name"]}}

    async def validate(self, attributes: Attributes) -> None:
        return None
