"""The StorageObjectInUseProtection admission plugin, and the printers of claims, volumes
and classes (upstream's columns)."""

from __future__ import annotations

from k8py.api.resources import Registry
from k8py.api.tables import table
from k8py.server.apiserver.admission import CREATE, UPDATE, Attributes
from k8py.server.apiserver.storageprotection import StorageObjectInUseProtection
from k8py.server.controllers.protection import by_claim, pod_terminated, pod_uses_claim

registry = Registry()


def attributes(plural: str, obj: dict, operation: str = CREATE, subresource=None):
    resource = registry.get("", "v1", plural)
    return Attributes(operation, resource, subresource, "default" if resource.namespaced
                      else None, obj["metadata"].get("name"), obj, None, None)


async def test_new_claims_and_volumes_get_their_finalizer_once():
    plugin = StorageObjectInUseProtection()
    claim = {"metadata": {"name": "c", "finalizers": ["example.com/keep"]}}
    admitted = await plugin.admit(attributes("persistentvolumeclaims", claim))
    assert admitted["metadata"]["finalizers"] == ["example.com/keep",
                                                  "kubernetes.io/pvc-protection"]
    assert await plugin.admit(attributes("persistentvolumeclaims", admitted)) is None
    volume = await plugin.admit(attributes("persistentvolumes", {"metadata": {"name": "v"}}))
    assert volume["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    # updates, subresources and other kinds are left alone
    assert await plugin.admit(attributes("persistentvolumes", {"metadata": {"name": "v"}},
                                         UPDATE)) is None
    assert await plugin.admit(attributes("persistentvolumeclaims", {"metadata": {"name": "c"}},
                                         UPDATE, "status")) is None
    assert await plugin.admit(attributes("pods", {"metadata": {"name": "p"}})) is None


def _pod(node="n1", phase="Running", **metadata):
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u1", **metadata},
            "spec": {"nodeName": node, "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}}]},
            "status": {"phase": phase}}


def test_which_pods_use_a_claim():
    data = {"metadata": {"name": "data", "namespace": "default"}}
    scratch = {"metadata": {"name": "p-scratch", "namespace": "default", "ownerReferences": [
        {"kind": "Pod", "name": "p", "uid": "u1", "controller": True}]}}
    assert by_claim(_pod()) == ["default/data", "default/p-scratch"]
    assert pod_uses_claim(_pod(), data) and pod_uses_claim(_pod(), scratch)
    assert pod_uses_claim(_pod(phase="Succeeded"), data)  # a finished pod still holds it
    assert not pod_uses_claim(_pod(node=""), data)  # not bound: cannot start any more
    shut_down = _pod(deletionTimestamp="2026-01-01T00:00:00Z", deletionGracePeriodSeconds=0)
    assert pod_uses_claim(shut_down, data) and not pod_uses_claim(shut_down, scratch)
    assert not pod_uses_claim(_pod(), {"metadata": {**scratch["metadata"],
                                                    "ownerReferences": []}})
    assert pod_terminated(_pod(phase="Failed"))
    assert pod_terminated(_pod(deletionTimestamp="2026-01-01T00:00:00Z"))  # none running
    terminating = _pod(deletionTimestamp="2026-01-01T00:00:00Z")
    terminating["status"]["containerStatuses"] = [{"state": {"running": {}}}]
    assert not pod_terminated(terminating)
    terminating["status"]["containerStatuses"] = [{"state": {"terminated": {}}}]
    assert pod_terminated(terminating)


def _cells(plural: str, obj: dict, group: str = "") -> dict:
    t = table(group, plural, [obj])
    return dict(zip([c["name"] for c in t["columnDefinitions"]], t["rows"][0]["cells"]))


def test_claim_volume_and_class_rows():
    created = {"creationTimestamp": "2026-01-01T00:00:00Z"}
    pending = {"metadata": {"name": "c", **created},
               "spec": {"storageClassName": "local-path",
                        "resources": {"requests": {"storage": "1Gi"}}},
               "status": {"phase": "Pending"}}
    row = _cells("persistentvolumeclaims", pending)
    assert [row[k] for k in ("Name", "Status", "Volume", "Capacity", "Access Modes",
                             "StorageClass", "VolumeAttributesClass", "VolumeMode")] == \
        ["c", "Pending", "", "", "", "local-path", "<unset>", "<unset>"]
    bound = {"metadata": {"name": "c", "deletionTimestamp": "2026-01-02T00:00:00Z", **created},
             "spec": {"volumeName": "pv1", "volumeMode": "Filesystem"},
             "status": {"phase": "Bound", "capacity": {"storage": "2Gi"},
                        "accessModes": ["ReadWriteMany", "ReadWriteOnce"]}}
    row = _cells("persistentvolumeclaims", bound)
    assert [row[k] for k in ("Status", "Volume", "Capacity", "Access Modes", "VolumeMode")] \
        == ["Terminating", "pv1", "2Gi", "RWO,RWX", "Filesystem"]
    volume = {"metadata": {"name": "pv1", **created},
              "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                       "persistentVolumeReclaimPolicy": "Delete",
                       "storageClassName": "local-path",
                       "claimRef": {"namespace": "default", "name": "c"}},
              "status": {"phase": "Bound"}}
    assert list(_cells("persistentvolumes", volume).values())[:9] == [
        "pv1", "2Gi", "RWO", "Delete", "Bound", "default/c", "local-path", "<unset>", ""]
    storage_class = {"metadata": {"name": "local-path", **created, "annotations": {
        "storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}
    assert list(_cells("storageclasses", storage_class, "storage.k8s.io").values())[:5] == [
        "local-path (default)", "rancher.io/local-path", "Delete", "WaitForFirstConsumer",
        False]


def test_a_node_removes_only_its_volumes_directories(tmp_path):
    from k8py.agent.localvolumes import LocalVolumeReclaimer

    reclaimer = LocalVolumeReclaimer(None, "n1", str(tmp_path / "node" / "storage"))
    volume = {"metadata": {"name": "pvc-u1"},
              "spec": {"claimRef": {"namespace": "default", "name": "data", "uid": "u1"}}}
    assert reclaimer._inside(str(tmp_path / "node" / "storage" / "pvc-any"), volume)
    # the server's storage directory (another data directory): only this claim's
    server = tmp_path / "server" / "storage"
    assert reclaimer._inside(str(server / "pvc-u1_default_data"), volume)
    assert not reclaimer._inside(str(server / "pvc-u2_default_data"), volume)
    assert not reclaimer._inside(str(tmp_path / "etc" / "pvc-u1_default_data"), volume)
    assert not reclaimer._inside(str(tmp_path / "node" / "storage" / "other"), volume)
