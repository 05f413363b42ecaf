"""The PersistentVolume controller: claims bound to volumes (upstream's persistent-volume-binder,
`pkg/controller/volume/persistentvolume`), acting as service account
`persistent-volume-binder`.

Two kinds of keys on one queue: `("claim", "ns/name")` and `("volume", name)`.

A claim without `spec.volumeName` looks for a volume: one whose `claimRef` already names it
(pre-bound by the admin or by a provisioner), else the smallest Available volume of the
claim's class (`""`: no class) that offers every access mode asked, at least the storage
asked, the same volumeMode and labels the claim's selector matches. A claim of a
`WaitForFirstConsumer` class is matched only once the scheduler has picked a node (annotation
`volume.kubernetes.io/selected-node`), and then only to volumes whose node affinity admits that
node. Found: the volume is bound first (`claimRef`, phase Bound), then the claim
(`volumeName`, `pv.kubernetes.io/bind-completed`, phase Bound, capacity and access modes), the
order upstream writes them in so a crash in between is repaired by the next pass. Not found,
with upstream's Events: `WaitForFirstConsumer` (delayed binding, no node yet),
`ProvisioningFailed` (`storageclass.storage.k8s.io "x" not found`), `ExternalProvisioning`
(the class's provisioner is asked through `volume.kubernetes.io/storage-provisioner`, as
upstream does for out-of-tree provisioners; k8py's own `rancher.io/local-path` is one:
`localpath.py`) or `FailedBinding` (no class). A claim naming a volume (`volumeName`
pre-binding) is bound to it when the volume is free and fits, else a `FailedBinding` says
why; a bound claim whose volume disappeared becomes Lost (`ClaimLost`).

A volume without a claimRef is Available. A bound volume whose claim is gone (or is another
claim of that name, by uid) is Released and reclaimed by its policy: `Retain` keeps it
Released for the admin; `Delete` of a local-path volume is left to the kubelet of the
volume's node, which removes the directory and then the volume (`k8py.agent.localvolumes`);
`Delete` of any other volume fails (`VolumeFailedDelete`: k8py has no deleter for it), as
`Recycle` does (deprecated upstream). Events about one claim or volume are recorded once per
reason and message, so the status writes' own echoes do not repeat them.
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors, quantity, selectors
from k8py.api.jsondoc import clone
from k8py.api.resources import builtin
from k8py.client.informer import key_of
from k8py.server.controllers.base import Controller

CLAIMS = builtin("v1", "persistentvolumeclaims")
VOLUMES = builtin("v1", "persistentvolumes")
CLASSES = builtin("storage.k8s.io/v1", "storageclasses")
NODES = builtin("v1", "nodes")
SELECTED_NODE = "volume.kubernetes.io/selected-node"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
LOCAL_PATH = "rancher.io/local-path"


def claim_class(claim: dict[str, Any]) -> str:
    annotations = claim["metadata"].get("annotations") or {}
    return annotations.get("volume.beta.kubernetes.io/storage-class") or \
        (claim.get("spec") or {}).get("storageClassName") or ""


def volume_class(volume: dict[str, Any]) -> str:
    annotations = volume["metadata"].get("annotations") or {}
    return annotations.get("volume.beta.kubernetes.io/storage-class") or \
        (volume.get("spec") or {}).get("storageClassName") or ""


def storage(value: Any) -> int:
    try:
        return quantity.amount("storage", value) if value is not None else 0
    except ValueError:
        return 0


def requested(claim: dict[str, Any]) -> int:
    return storage(((claim.get("spec") or {}).get("resources") or {}).get(
        "requests", {}).get("storage"))


def capacity(volume: dict[str, Any]) -> int:
    return storage(((volume.get("spec") or {}).get("capacity") or {}).get("storage"))


def mismatch(claim: dict[str, Any], volume: dict[str, Any]) -> str | None:
    """Why `volume` cannot serve `claim` (upstream's checkVolumeSatisfyClaim wording)."""
    spec, claim_spec = volume.get("spec") or {}, claim.get("spec") or {}
    if capacity(volume) < requested(claim):
        return "requested PV is too small"
    if volume_class(volume) != claim_class(claim):
        return "storageClassName does not match"
    if (spec.get("volumeMode") or "Filesystem") != (claim_spec.get("volumeMode") or
                                                    "Filesystem"):
        return "incompatible volumeMode"
    if not set(claim_spec.get("accessModes") or ()) <= set(spec.get("accessModes") or ()):
        return "incompatible accessMode"
    return None


def node_admits(volume: dict[str, Any], node: dict[str, Any] | None, node_name: str) -> bool:
    """Whether the volume's required node affinity admits the node (by labels and name)."""
    required = ((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required")
    if not required:
        return True
    labels = ((node or {}).get("metadata") or {}).get("labels") or {
        "kubernetes.io/hostname": node_name}
    for term in required.get("nodeSelectorTerms") or ():
        if term_matches(term, labels, node_name):
            return True
    return False


def term_matches(term: dict[str, Any], labels: dict[str, str], name: str) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    for expression, value in [*((e, labels.get(e.get("key"))) for e in expressions),
                              *((f, name if f.get("key") == "metadata.name" else None)
                                for f in fields)]:
        values, operator = expression.get("values") or [], expression.get("operator")
        if operator == "In" and value not in values or \
                operator == "NotIn" and value in values or \
                operator == "Exists" and value is None or \
                operator == "DoesNotExist" and value is not None:
            return False
        if operator in ("Gt", "Lt"):
            try:
                number, bound = int(value), int(values[0])
            except (TypeError, ValueError, IndexError):
                return False
            if not (number > bound if operator == "Gt" else number < bound):
                return False
    return True


class PersistentVolumeController(Controller):
    name = "persistentvolume-binder"
    component = "persistentvolume-controller"
    service_account = "persistent-volume-binder"
    workers = 1  # binding picks among shared volumes: one decision at a time

    def setup(self) -> None:
        self.claims = self.informer(CLAIMS)
        self.volumes = self.informer(VOLUMES)
        self.classes = self.informer(CLASSES)
        self.nodes = self.informer(NODES)
        self.claims.add_handlers(self._claim_changed, lambda old, new: self._claim_changed(new),
                                 self._claim_deleted)
        self.volumes.add_handlers(self._volume_changed,
                                  lambda old, new: self._volume_changed(new),
                                  self._volume_changed)
        self.classes.add_handlers(lambda c: self._pending_claims(), None, None)
        self._reported: dict[str, set[tuple[str, str]]] = {}  # uid -> (reason, message)

    def _claim_changed(self, claim: dict[str, Any]) -> None:
        self.enqueue(("claim", key_of(claim)))
        if (claim.get("spec") or {}).get("volumeName"):
            self.enqueue(("volume", claim["spec"]["volumeName"]))

    def _claim_deleted(self, claim: dict[str, Any]) -> None:
        self._reported.pop(claim["metadata"].get("uid", ""), None)
        for volume in self.volumes.list():
            ref = (volume.get("spec") or {}).get("claimRef") or {}
            if ref.get("uid") == claim["metadata"].get("uid"):
                self.enqueue(("volume", volume["metadata"]["name"]))

    def _volume_changed(self, volume: dict[str, Any]) -> None:
        self.enqueue(("volume", volume["metadata"]["name"]))
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        if ref.get("name"):
            self.enqueue(("claim", f"{ref.get('namespace')}/{ref['name']}"))
        if not ref:  # a free volume may serve a waiting claim
            self._pending_claims()

    def _pending_claims(self) -> None:
        for claim in self.claims.list():
            if not (claim.get("spec") or {}).get("volumeName"):
                self.enqueue(("claim", key_of(claim)))

    async def _event(self, resource, obj: dict[str, Any], kind: str, reason: str,
                     message: str) -> None:
        seen = self._reported.setdefault(obj["metadata"].get("uid", ""), set())
        if (reason, message) not in seen:
            seen.add((reason, message))
            await self.record(resource, obj, kind, reason, message)

    async def reconcile(self, key: tuple[str, str]) -> float | None:
        kind, name = key
        if kind == "claim":
            claim = self.claims.get(name)
            if claim is not None and not claim["metadata"].get("deletionTimestamp"):
                await self._sync_claim(claim)
        else:
            volume = self.volumes.get(name)
            if volume is not None:
                await self._sync_volume(volume)
        return None

    # --- claims ------------------------------------------------------------------------------

    async def _sync_claim(self, claim: dict[str, Any]) -> None:
        wanted = (claim.get("spec") or {}).get("volumeName")
        if wanted:
            await self._sync_named_claim(claim, wanted)
            return
        class_name = claim_class(claim)
        storage_class = self.classes.get(class_name) if class_name else None
        delayed = (storage_class or {}).get("volumeBindingMode") == "WaitForFirstConsumer"
        node_name = (claim["metadata"].get("annotations") or {}).get(SELECTED_NODE)
        volume = self._find_volume(claim, node_name if delayed else None,
                                   allow_free=not delayed or bool(node_name))
        if volume is not None:
            await self._bind(claim, volume)
            return
        if delayed and not node_name:
            await self._event(CLAIMS, claim, "Normal", "WaitForFirstConsumer",
                              "waiting for first consumer to be created before binding")
        elif class_name:
            await self._provision(claim, class_name, storage_class)
        else:
            await self._event(CLAIMS, claim, "Normal", "FailedBinding",
                              "no persistent volumes available for this claim and no "
                              "storage class is set")
        await self._claim_status(claim, "Pending")

    def _find_volume(self, claim: dict[str, Any], node_name: str | None,
                     allow_free: bool) -> dict[str, Any] | None:
        uid = claim["metadata"]["uid"]
        namespace, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
        selector = (claim.get("spec") or {}).get("selector")
        node = self.nodes.get(node_name) if node_name else None
        best = None
        for volume in self.volumes.list():
            spec = volume.get("spec") or {}
            ref = spec.get("claimRef") or {}
            if ref:
                if ref.get("namespace") == namespace and ref.get("name") == name and \
                        ref.get("uid") in (None, "", uid) and \
                        not volume["metadata"].get("deletionTimestamp"):
                    return volume  # pre-bound to this claim
                continue
            if not allow_free or (volume.get("status") or {}).get("phase") not in \
                    (None, "Available", "Pending") or \
                    volume["metadata"].get("deletionTimestamp") or \
                    mismatch(claim, volume) is not None:
                continue
            if selector and not selectors.selector_matches(
                    selector, volume["metadata"].get("labels") or {}):
                continue
            if node_name and not node_admits(volume, node, node_name):
                continue
            if best is None or capacity(volume) < capacity(best):
                best = volume
        return best

    async def _provision(self, claim: dict[str, Any], class_name: str,
                         storage_class: dict[str, Any] | None) -> None:
        if storage_class is None:
            await self._event(CLAIMS, claim, "Warning", "ProvisioningFailed",
                              f'storageclass.storage.k8s.io "{class_name}" not found')
            return
        provisioner = storage_class.get("provisioner") or ""
        annotations = claim["metadata"].get("annotations") or {}
        if annotations.get(STORAGE_PROVISIONER) != provisioner:
            updated = clone(claim)
            updated["metadata"]["annotations"] = {**annotations, STORAGE_PROVISIONER: provisioner,
                                                  BETA_STORAGE_PROVISIONER: provisioner}
            claim = await self.client.update(CLAIMS, updated)
        await self._event(CLAIMS, claim, "Normal", "ExternalProvisioning",
                          "Waiting for a volume to be created either by the external "
                          f"provisioner '{provisioner}' or manually by the system "
                          "administrator. If volume creation is delayed, please verify that "
                          "the provisioner is running and correctly registered.")

    async def _sync_named_claim(self, claim: dict[str, Any], volume_name: str) -> None:
        volume = self.volumes.get(volume_name)
        phase = (claim.get("status") or {}).get("phase")
        if volume is None:
            if phase == "Bound":
                await self._event(CLAIMS, claim, "Warning", "ClaimLost",
                                  "Bound claim has lost its PersistentVolume. Data on the "
                                  "volume is lost!")
                await self._claim_status(claim, "Lost")
            else:
                await self._claim_status(claim, "Pending")
            return
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        if ref.get("uid") == claim["metadata"]["uid"]:
            await self._finish_claim(claim, volume)
            return
        if ref and not (ref.get("namespace") == claim["metadata"]["namespace"] and
                        ref.get("name") == claim["metadata"]["name"] and not ref.get("uid")):
            await self._event(CLAIMS, claim, "Warning", "FailedBinding",
                              f'volume "{volume_name}" already bound to a different claim.')
            await self._claim_status(claim, "Pending")
            return
        problem = mismatch(claim, volume)
        if problem is not None:
            await self._event(CLAIMS, claim, "Warning", "FailedBinding",
                              f'Cannot bind to requested volume "{volume_name}": {problem}')
            await self._claim_status(claim, "Pending")
            return
        await self._bind(claim, volume)

    # --- binding -----------------------------------------------------------------------------

    async def _bind(self, claim: dict[str, Any], volume: dict[str, Any]) -> None:
        metadata = claim["metadata"]
        ref = {"kind": "PersistentVolumeClaim", "namespace": metadata["namespace"],
               "name": metadata["name"], "uid": metadata["uid"], "apiVersion": "v1",
               "resourceVersion": metadata.get("resourceVersion")}
        current = (volume.get("spec") or {}).get("claimRef") or {}
        if current.get("uid") != metadata["uid"]:
            updated = clone(volume)
            if not current:  # chosen by us, not pre-bound: ours to undo
                updated["metadata"]["annotations"] = {
                    **(volume["metadata"].get("annotations") or {}), BOUND_BY_CONTROLLER: "yes"}
            updated["spec"]["claimRef"] = ref
            volume = await self.client.update(VOLUMES, updated)
        volume = await self._volume_status(volume, "Bound")
        await self._finish_claim(claim, volume)

    async def _finish_claim(self, claim: dict[str, Any], volume: dict[str, Any]) -> None:
        volume_name = volume["metadata"]["name"]
        annotations = claim["metadata"].get("annotations") or {}
        if claim["spec"].get("volumeName") != volume_name or \
                annotations.get(BIND_COMPLETED) != "yes":
            updated = clone(claim)
            extra = {BIND_COMPLETED: "yes"}
            if not claim["spec"].get("volumeName"):
                extra[BOUND_BY_CONTROLLER] = "yes"
            updated["metadata"]["annotations"] = {**annotations, **extra}
            updated["spec"]["volumeName"] = volume_name
            claim = await self.client.update(CLAIMS, updated)
        if (volume.get("status") or {}).get("phase") != "Bound":
            await self._volume_status(volume, "Bound")
        spec = volume.get("spec") or {}
        await self._claim_status(claim, "Bound", accessModes=spec.get("accessModes") or [],
                                 capacity=spec.get("capacity") or {})

    async def _claim_status(self, claim: dict[str, Any], phase: str, **fields: Any) -> None:
        status = claim.get("status") or {}
        wanted = {**status, "phase": phase, **fields}
        if phase != "Bound":
            wanted.pop("accessModes", None)
            wanted.pop("capacity", None)
        if wanted != status:
            await self.client.update_status(CLAIMS, {**claim, "status": wanted})

    async def _volume_status(self, volume: dict[str, Any], phase: str,
                             message: str | None = None) -> dict[str, Any]:
        status = volume.get("status") or {}
        if status.get("phase") == phase and status.get("message") == message:
            return volume
        wanted = {"phase": phase}
        if message:
            wanted["message"] = message
        return await self.client.update_status(VOLUMES, {**volume, "status": wanted})

    # --- volumes -----------------------------------------------------------------------------

    async def _sync_volume(self, volume: dict[str, Any]) -> None:
        spec = volume.get("spec") or {}
        phase = (volume.get("status") or {}).get("phase")
        ref = spec.get("claimRef") or {}
        if not ref:
            if phase not in ("Available", "Failed"):
                await self._volume_status(volume, "Available")
            return
        claim = self.claims.get(f"{ref.get('namespace')}/{ref.get('name')}")
        if not ref.get("uid"):  # pre-bound by the admin: waits for that claim
            if phase not in ("Available", "Failed"):
                await self._volume_status(volume, "Available")
            return
        if claim is None or claim["metadata"].get("uid") != ref["uid"]:
            # only a missing claim proves it gone; the cache may be behind a new one
            if claim is None and not await self._claim_exists(ref):
                await self._release(volume)
            return
        claim_volume = (claim.get("spec") or {}).get("volumeName")
        if claim_volume == volume["metadata"]["name"]:
            if phase != "Bound":
                await self._volume_status(volume, "Bound")
        elif claim_volume and (volume["metadata"].get("annotations") or {}).get(
                BOUND_BY_CONTROLLER):
            # the claim went to another volume: this one is free again
            updated = clone(volume)
            updated["spec"].pop("claimRef", None)
            updated["metadata"]["annotations"].pop(BOUND_BY_CONTROLLER, None)
            await self._volume_status(await self.client.update(VOLUMES, updated), "Available")

    async def _claim_exists(self, ref: dict[str, Any]) -> bool:
        try:
            claim = await self.client.get(CLAIMS, ref["name"], ref.get("namespace"))
        except errors.NotFound:
            return False
        return claim["metadata"].get("uid") == ref.get("uid")

    async def _release(self, volume: dict[str, Any]) -> None:
        phase = (volume.get("status") or {}).get("phase")
        if phase == "Failed":
            return
        if phase != "Released":
            volume = await self._volume_status(volume, "Released")
        policy = (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        annotations = volume["metadata"].get("annotations") or {}
        if policy == "Retain" or (policy == "Delete" and
                                  annotations.get(PROVISIONED_BY) == LOCAL_PATH):
            return  # the admin's, or the node's to delete (k8py.agent.localvolumes)
        if policy == "Delete":
            reason, message = "VolumeFailedDelete", (
                f'error getting deleter volume plugin for volume "{volume["metadata"]["name"]}"'
                ": no deletable volume plugin matched")
        else:
            reason, message = "VolumeFailedRecycle", "No recycler plugin found for the volume!"
        await self._event(VOLUMES, volume, "Warning", reason, message)
        await self._volume_status(volume, "Failed", message)

