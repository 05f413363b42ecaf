"""The StorageObjectInUseProtection admission plugin (upstream's
plugin/pkg/admission/storage/storageobjectinuseprotection): every PersistentVolumeClaim
created gets the finalizer `kubernetes.io/pvc-protection`, every PersistentVolume
`kubernetes.io/pv-protection`.

The finalizers keep a deleted claim while a pod still uses it, and a deleted volume while it
is Bound; the pvc-protection and pv-protection controllers (`controllers/protection.py`)
remove them once that is over. Only creates are touched (an update may drop the finalizer,
as upstream allows), never a subresource; a finalizer already present is not added twice.
"""

from __future__ import annotations

from typing import Any

from k8py.server.apiserver.admission import CREATE, Attributes

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
FINALIZER_OF = {"persistentvolumeclaims": PVC_PROTECTION, "persistentvolumes": PV_PROTECTION}


class StorageObjectInUseProtection:
    name = "StorageObjectInUseProtection"

    async def admit(self, attributes: Attributes) -> dict[str, Any] | None:
        resource, obj = attributes.resource, attributes.object
        finalizer = FINALIZER_OF.get(resource.plural) if not resource.group else None
        if finalizer is None or attributes.operation != CREATE or attributes.subresource or \
                not isinstance(obj, dict):
            return None
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict):
            return None  # validation refuses it
        finalizers = metadata.get("finalizers") or []
        if not isinstance(finalizers, list):
            return None  # validation refuses it
        if finalizer in finalizers:
            return None
        return {**obj, "metadata": {**metadata, "finalizers": [*finalizers, finalizer]}}

    async def validate(self, attributes: Attributes) -> None:
        return None
