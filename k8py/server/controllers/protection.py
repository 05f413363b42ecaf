"""Storage object in-use protection: the controllers that lift the finalizers the
StorageObjectInUseProtection admission plugin (`apiserver/storageprotection.py`) puts on every
claim and volume (upstream's pkg/controller/volume/pvcprotection and pvprotection).

pvc-protection (service account `pvc-protection-controller`): a claim being deleted keeps
`kubernetes.io/pvc-protection` while a pod uses it; "uses" is upstream's: a pod bound to a
node (an unbound one cannot start: the kubelet and the scheduler refuse a claim being
deleted) with a `persistentVolumeClaim` volume of that name, whatever its phase (upstream
keeps the claim of a finished pod too, until the pod is deleted), or with a generic
`ephemeral` volume whose claim (`<pod>-<volume>`) this pod owns, unless the pod is shut down
(deleted with grace 0). The pods come from an informer indexed by claim; only when it finds
none does the controller ask the API server with a live list of the namespace's pods, so a
pod the cache has not seen yet cannot lose its data. Then the finalizer is removed (an
update: a Conflict retries). A claim not being deleted that lacks the finalizer (made before
the plugin) gets it. A pod's deletion, or its end, or its creation before it is bound,
queues its claims.

pv-protection (service account `pv-protection-controller`): a volume being deleted keeps
`kubernetes.io/pv-protection` while its phase is Bound; once the binder marks it Released
(its claim gone) or Available, the finalizer is removed and the deletion completes. A volume
without the finalizer gets it.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors
from k8py.api.jsondoc import clone
from k8py.api.resources import builtin
from k8py.client.informer import key_of, split_key
from k8py.server.controllers.base import Controller

CLAIMS = builtin("v1", "persistentvolumeclaims")
VOLUMES = builtin("v1", "persistentvolumes")
PODS = builtin("v1", "pods")
# upstream's names, as the admission plugin adds them (the loops do not import the API server)
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"


def deletion_candidate(obj: dict[str, Any], finalizer: str) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp")) and \
        finalizer in (obj["metadata"].get("finalizers") or ())


def needs_finalizer(obj: dict[str, Any], finalizer: str) -> bool:
    return not obj["metadata"].get("deletionTimestamp") and \
        finalizer not in (obj["metadata"].get("finalizers") or ())


def claim_names(pod: dict[str, Any]) -> list[str]:
    """The claims a pod's volumes name, an ephemeral volume's as `<pod>-<volume>`."""
    names = []
    for volume in (pod.get("spec") or {}).get("volumes") or ():
        if volume.get("persistentVolumeClaim") is not None:
            names.append((volume["persistentVolumeClaim"] or {}).get("claimName") or "")
        elif volume.get("ephemeral") is not None:
            names.append(f"{pod['metadata']['name']}-{volume.get('name')}")
    return [n for n in names if n]


def by_claim(pod: dict[str, Any]) -> list[str]:
    return [f"{pod['metadata'].get('namespace')}/{name}" for name in claim_names(pod)]


def _not_running(statuses) -> bool:
    return all(((s or {}).get("state") or {}).keys() & {"terminated", "waiting"}
               for s in statuses or ())


def pod_terminated(pod: dict[str, Any]) -> bool:
    """upstream's volumeutil.IsPodTerminated: finished, or being deleted with nothing
    running."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    return bool(pod["metadata"].get("deletionTimestamp")) and all(
        _not_running(status.get(field)) for field in
        ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"))


def pod_shut_down(pod: dict[str, Any]) -> bool:
    """Done by its kubelet or force-deleted: deleted with a grace period of 0."""
    return bool(pod["metadata"].get("deletionTimestamp")) and \
        pod["metadata"].get("deletionGracePeriodSeconds") == 0


def pod_uses_claim(pod: dict[str, Any], claim: dict[str, Any]) -> bool:
    if not (pod.get("spec") or {}).get("nodeName"):
        return False
    name = claim["metadata"]["name"]
    for volume in pod["spec"].get("volumes") or ():
        if volume.get("persistentVolumeClaim") is not None:
            if (volume["persistentVolumeClaim"] or {}).get("claimName") == name:
                return True
        elif volume.get("ephemeral") is not None and not pod_shut_down(pod) and \
                f"{pod['metadata']['name']}-{volume.get('name')}" == name and \
                any(ref.get("controller") and ref.get("uid") == pod["metadata"].get("uid")
                    for ref in claim["metadata"].get("ownerReferences") or ()):
            return True
    return False


class PvcProtectionController(Controller):
    name = "pvc-protection"
    service_account = "pvc-protection-controller"

    def setup(self) -> None:
        self.claims = self.informer(CLAIMS)
        self.claims.add_handlers(self._claim_changed,
                                 lambda old, new: self._claim_changed(new))
        self.pods = self.informer(PODS)
        self.pods.add_index("claim", by_claim)
        self.pods.add_handlers(lambda pod: self._pod_changed(pod, False),
                               self._pod_updated, lambda pod: self._pod_changed(pod, True))

    def _claim_changed(self, claim: dict[str, Any]) -> None:
        if needs_finalizer(claim, PVC_PROTECTION) or deletion_candidate(claim, PVC_PROTECTION):
            self.enqueue_object(claim)

    def _pod_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._pod_changed(new, False)
        # a pod deleted and made again under its name between two events: the old one's
        # claims may be waiting for it to go
        if old["metadata"].get("uid") != new["metadata"].get("uid"):
            self._pod_changed(old, True)

    def _pod_changed(self, pod: dict[str, Any], deleted: bool) -> None:
        # only a pod that is gone, finished or not yet bound can free a claim
        if not deleted and not pod_terminated(pod) and (pod.get("spec") or {}).get("nodeName"):
            return
        for key in by_claim(pod):
            self.enqueue(key)

    async def reconcile(self, key: str) -> float | None:
        claim = self.claims.get(key)
        if claim is None:
            return None
        if deletion_candidate(claim, PVC_PROTECTION):
            if not await self._in_use(claim):
                updated = clone(claim)
                updated["metadata"]["finalizers"] = [
                    f for f in updated["metadata"]["finalizers"] if f != PVC_PROTECTION]
                await self._update(updated)
                return None
        if needs_finalizer(claim, PVC_PROTECTION):
            updated = clone(claim)
            updated["metadata"]["finalizers"] = [
                *(updated["metadata"].get("finalizers") or ()), PVC_PROTECTION]
            await self._update(updated)
        return None

    async def _in_use(self, claim: dict[str, Any]) -> bool:
        if any(pod_uses_claim(pod, claim) for pod in self.pods.by_index("claim", key_of(claim))):
            return True
        # the cache may be behind a pod just made: ask the API server before letting go
        namespace, _ = split_key(key_of(claim))
        live = await self.client.list(PODS, namespace)
        return any(pod_uses_claim(pod, claim) for pod in live.get("items") or ())

    async def _update(self, claim: dict[str, Any]) -> None:
        try:
            await self.client.update(CLAIMS, claim)
        except errors.NotFound:
            pass


class PvProtectionController(Controller):
    name = "pv-protection"
    service_account = "pv-protection-controller"

    def setup(self) -> None:
        self.volumes = self.informer(VOLUMES)
        self.volumes.add_handlers(self._volume_changed,
                                  lambda old, new: self._volume_changed(new))

    def _volume_changed(self, volume: dict[str, Any]) -> None:
        if needs_finalizer(volume, PV_PROTECTION) or deletion_candidate(volume, PV_PROTECTION):
            self.enqueue_object(volume)

    async def reconcile(self, key: str) -> float | None:
        volume = self.volumes.get(key)
        if volume is None:
            return None
        updated = None
        if deletion_candidate(volume, PV_PROTECTION):
            if (volume.get("status") or {}).get("phase") != "Bound":
                updated = clone(volume)
                updated["metadata"]["finalizers"] = [
                    f for f in updated["metadata"]["finalizers"] if f != PV_PROTECTION]
        elif needs_finalizer(volume, PV_PROTECTION):
            updated = clone(volume)
            updated["metadata"]["finalizers"] = [
                *(updated["metadata"].get("finalizers") or ()), PV_PROTECTION]
        if updated is not None:
            try:
                await self.client.update(VOLUMES, updated)
            except errors.NotFound:
                pass
        return None
