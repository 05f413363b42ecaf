"""ReplicaSets and ReplicationControllers on simulated nodes, driven with kubectl."""

from __future__ import annotations

from k8py.api.resources import builtin
from tests.conftest import eventually

PODS = builtin("v1", "pods")
REPLICASETS = builtin("apps/v1", "replicasets")
RCS = builtin("v1", "replicationcontrollers")

REPLICASET = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web, namespace: default}
spec:
  replicas: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
"""


def active(pods: list[dict]) -> list[dict]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


async def pods_of(client, selector: str) -> list[dict]:
    return active((await client.list(PODS, "default", label_selector=selector))["items"])


async def test_replicaset_keeps_its_count(cluster):
    client = cluster.client
    await cluster.akubectl("apply", "-f", "-", input=REPLICASET)

    async def ready(count: int):
        rs = await client.get(REPLICASETS, "web", "default")
        status = rs.get("status") or {}
        return status.get("readyReplicas", 0) == count and status.get("replicas") == count \
            and len(await pods_of(client, "app=web")) == count

    await eventually(lambda: ready(5), 10, what="5 ready replicas")
    pods = await pods_of(client, "app=web")
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for p in pods)
    assert all(p["status"]["phase"] == "Running" for p in pods)
    victims = [p["metadata"]["name"] for p in pods[:2]]
    await cluster.akubectl("delete", "pod", *victims)
    await eventually(lambda: ready(5), 10, what="deleted pods replaced")
    names = {p["metadata"]["name"] for p in await pods_of(client, "app=web")}
    assert not names & set(victims)

    await cluster.akubectl("scale", "rs/web", "--replicas=12")
    await eventually(lambda: ready(12), 10, what="scaled up to 12")
    await cluster.akubectl("scale", "rs/web", "--replicas=0")
    await eventually(lambda: ready(0), 10, what="scaled down to 0")


async def test_orphans_matching_the_selector_are_adopted(cluster):
    client = cluster.client
    await client.create(PODS, {"apiVersion": "v1", "kind": "Pod",
                               "metadata": {"name": "stray", "namespace": "default",
                                            "labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    await cluster.akubectl("apply", "-f", "-", input=REPLICASET)

    async def adopted():
        stray = await client.get(PODS, "stray", "default")
        return (stray["metadata"].get("ownerReferences") or [{}])[0].get("name") == "web" \
            and len(await pods_of(client, "app=web")) == 5

    await eventually(adopted, 10, what="the stray pod adopted, 4 more created")


async def test_replication_controller(cluster):
    client = cluster.client
    await cluster.akubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy, namespace: default}
spec:
  replicas: 3
  selector: {app: legacy}
  template:
    metadata: {labels: {app: legacy}}
    spec: {containers: [{name: c, image: nginx}]}
""")

    async def ready():
        rc = await client.get(RCS, "legacy", "default")
        return (rc.get("status") or {}).get("readyReplicas") == 3

    await eventually(ready, 10, what="3 ready replicas")
    got = await cluster.akubectl("get", "rc", "legacy")
    assert "legacy" in got.stdout and " 3 " in got.stdout
