"""Pure parts of persistent volumes: the default StorageClass choice, a volume's fit for a
claim, node affinity, and the scheduler's VolumeBinding filter."""

from __future__ import annotations

from k8py.server.apiserver.defaultstorageclass import default_class
from k8py.server.controllers.persistentvolume import mismatch, node_admits
from k8py.server.scheduler.framework import NodeInfo, PodInfo, Snapshot
from k8py.server.scheduler.plugins import VolumeBinding

DEFAULT = {"storageclass.kubernetes.io/is-default-class": "true"}


def sc(name, created, annotations=None, **fields):
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "annotations": annotations or {}}, **fields}


def test_default_class_is_the_newest_default_then_by_name():
    assert default_class([sc("a", "2024-01-01T00:00:00Z")]) is None
    classes = [sc("old", "2024-01-01T00:00:00Z", DEFAULT),
               sc("zeta", "2024-02-01T00:00:00Z", DEFAULT),
               sc("alpha", "2024-02-01T00:00:00Z", DEFAULT),
               sc("plain", "2025-01-01T00:00:00Z")]
    assert default_class(classes)["metadata"]["name"] == "alpha"


def claim(size="1Gi", modes=("ReadWriteOnce",), cls="", **spec):
    return {"metadata": {"name": "c", "namespace": "ns", "uid": "u"},
            "spec": {"accessModes": list(modes), "storageClassName": cls,
                     "resources": {"requests": {"storage": size}}, **spec}}


def pv(size="1Gi", modes=("ReadWriteOnce",), cls="", **spec):
    return {"metadata": {"name": "v"},
            "spec": {"capacity": {"storage": size}, "accessModes": list(modes),
                     "storageClassName": cls, **spec}}


def test_mismatch_words_upstreams_reasons():
    assert mismatch(claim("2Gi"), pv("1Gi")) == "requested PV is too small"
    assert mismatch(claim(cls="gold"), pv()) == "storageClassName does not match"
    assert mismatch(claim(modes=["ReadWriteMany"]), pv()) == "incompatible accessMode"
    assert mismatch(claim(volumeMode="Block"), pv()) == "incompatible volumeMode"
    assert mismatch(claim("1000Mi"), pv("1Gi", ["ReadWriteOnce", "ReadOnlyMany"])) is None


AFFINITY = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}


def test_node_affinity_of_a_volume():
    local = pv(nodeAffinity=AFFINITY)
    assert node_admits(local, None, "n1")
    assert not node_admits(local, None, "n2")
    assert node_admits(pv(), None, "anything")


def node(name):
    return NodeInfo({"metadata": {"name": name,
                                  "labels": {"kubernetes.io/hostname": name}}})


def test_volume_binding_filter():
    snapshot = Snapshot()
    plugin = VolumeBinding()
    pod = PodInfo.of({"metadata": {"name": "p", "namespace": "ns"}, "spec": {
        "containers": [], "volumes": [{"name": "d", "persistentVolumeClaim":
                                       {"claimName": "c"}}]}})
    assert plugin.prepare(pod, snapshot) == 'persistentvolumeclaim "c" not found'
    snapshot.claims["ns/c"] = claim(cls="fast")
    snapshot.classes["fast"] = {"metadata": {"name": "fast"}, "provisioner": "x"}
    assert plugin.prepare(pod, snapshot) == "pod has unbound immediate PersistentVolumeClaims"
    snapshot.classes["fast"]["volumeBindingMode"] = "WaitForFirstConsumer"
    assert plugin.filter(pod, node("n2"), plugin.prepare(pod, snapshot)) is None
    snapshot.claims["ns/c"]["spec"]["volumeName"] = "v"
    snapshot.volumes["v"] = pv(cls="fast", nodeAffinity=AFFINITY)
    state = plugin.prepare(pod, snapshot)
    assert plugin.filter(pod, node("n1"), state) is None
    assert plugin.filter(pod, node("n2"), state) == "node(s) had volume node affinity conflict"
    plain = PodInfo.of({"metadata": {"name": "q", "namespace": "ns"},
                        "spec": {"containers": []}})
    assert plugin.prepare(plain, snapshot) is not None  # SKIP sentinel, nothing to check
