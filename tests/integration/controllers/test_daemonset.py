"""The DaemonSet controller against a real API server, simulated nodes and a scheduler: every
eligible node gets one pod (pinned by node affinity, bound by the scheduler), taints and node
selectors are honoured as nodes come, go and change, and rolling updates replace pods within
`maxUnavailable`."""

from __future__ import annotations

import asyncio

from k8py.agent.simulated import SimulatedNodes
from k8py.api.resources import builtin
from k8py.server.controllers.history import CONTROLLER_REVISIONS
from tests.conftest import eventually

DAEMONSETS = builtin("apps/v1", "daemonsets")
PODS = builtin("v1", "pods")
NODES = builtin("v1", "nodes")


def daemonset(name: str, **pod_spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "agent:1"}],
                                           **pod_spec}}}}


async def placed(client, name: str) -> dict[str, dict]:
    """Node -> the running, ready, not deleted pod of the set there."""
    pods = (await client.list(PODS, "default", label_selector=f"app={name}"))["items"]
    out = {}
    for pod in pods:
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if pod["spec"].get("nodeName") and conditions.get("Ready") == "True" and \
                not pod["metadata"].get("deletionTimestamp"):
            out[pod["spec"]["nodeName"]] = pod
    return out


async def pods_of(client, name: str) -> list[dict]:
    return (await client.list(PODS, "default", label_selector=f"app={name}"))["items"]


async def test_daemonset_covers_eligible_nodes_as_they_come_and_change(cluster):
    client = cluster.client
    await client.patch(NODES, "sim-node-2", {"spec": {"taints": [
        {"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]}})
    await client.create(DAEMONSETS, daemonset("agent"), "default")
    await client.create(DAEMONSETS, daemonset("tolerant", tolerations=[
        {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]),
        "default")

    async def nodes_of(name):
        return set(await placed(client, name))

    await eventually(lambda: _equals(nodes_of("agent"), {"sim-node-0", "sim-node-1"}), 10, 0.1,
                     "agent on the untainted nodes")
    await eventually(lambda: _equals(nodes_of("tolerant"),
                                     {"sim-node-0", "sim-node-1", "sim-node-2"}), 10, 0.1,
                     "tolerant on every node")

    pod = (await placed(client, "agent"))["sim-node-0"]
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                       "values": ["sim-node-0"]}]}]
    keys = {(t["key"], t["effect"]) for t in pod["spec"]["tolerations"]}
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in keys
    assert ("node.kubernetes.io/not-ready", "NoExecute") in keys
    assert "controller-revision-hash" in pod["metadata"]["labels"]
    assert pod["metadata"]["labels"]["pod-template-generation"] == "1"
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"

    async def status(name):
        return (await client.get(DAEMONSETS, name, "default")).get("status") or {}

    await eventually(lambda: _has(status("agent"), desiredNumberScheduled=2,
                                  currentNumberScheduled=2, numberReady=2, numberAvailable=2,
                                  updatedNumberScheduled=2, numberMisscheduled=0,
                                  numberUnavailable=0, observedGeneration=1), 10, 0.1)

    # A node joins: both sets follow it.
    late = SimulatedNodes(client, 1, prefix="late", heartbeat=1.0)
    joined = asyncio.create_task(late.run())
    try:
        await eventually(lambda: _equals(nodes_of("agent"),
                                         {"sim-node-0", "sim-node-1", "sim-late-0"}), 10, 0.1,
                         "agent on the late node")
        await eventually(lambda: _has(status("tolerant"), desiredNumberScheduled=4,
                                      numberReady=4), 10, 0.1)

        # Relabelled nodes: a selector picks a node up and lets it go.
        await client.create(DAEMONSETS, daemonset("edge", nodeSelector={"role": "edge"}),
                            "default")
        await client.patch(NODES, "sim-late-0", {"metadata": {"labels": {"role": "edge"}}})
        await eventually(lambda: _equals(nodes_of("edge"), {"sim-late-0"}), 10, 0.1)
        await client.patch(NODES, "sim-late-0", {"metadata": {"labels": {"role": None}}})
        await eventually(lambda: _count(pods_of(client, "edge"), 0), 10, 0.1,
                         "edge pod removed from the relabelled node")

        # A NoExecute taint the pod does not tolerate evicts it; NoSchedule alone did not.
        await client.patch(NODES, "sim-node-1", {"spec": {"taints": [
            {"key": "drain", "effect": "NoExecute"}]}})
        await eventually(lambda: _equals(nodes_of("agent"), {"sim-node-0", "sim-late-0"}),
                         10, 0.1, "agent leaves the NoExecute node")
    finally:
        joined.cancel()
        await asyncio.gather(joined, return_exceptions=True)


async def test_daemonset_rolling_update_replaces_pods_within_max_unavailable(cluster):
    client = cluster.client
    await client.create(DAEMONSETS, daemonset("roll"), "default")
    await eventually(lambda: _count(placed(client, "roll"), 3), 10, 0.1)
    before = {p["metadata"]["uid"] for p in (await placed(client, "roll")).values()}

    fewest = [3]
    done = asyncio.Event()

    async def watch_availability():
        while not done.is_set():
            fewest[0] = min(fewest[0], len(await placed(client, "roll")))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(watch_availability())
    ds = await client.get(DAEMONSETS, "roll", "default")
    ds["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:2"
    await client.update(DAEMONSETS, ds)

    async def rolled():
        pods = await placed(client, "roll")
        return len(pods) == 3 and all(
            p["spec"]["containers"][0]["image"] == "agent:2" for p in pods.values())

    try:
        await eventually(rolled, 15, 0.1, "every pod replaced")
    finally:
        done.set()
        await sampler
    after = await placed(client, "roll")
    assert not before & {p["metadata"]["uid"] for p in after.values()}
    assert fewest[0] >= 2, "more than maxUnavailable=1 node lost its pod at once"
    assert {p["metadata"]["labels"]["pod-template-generation"] for p in after.values()} == {"2"}

    revisions = (await client.list(CONTROLLER_REVISIONS, "default"))["items"]
    assert sorted(r["revision"] for r in revisions) == [1, 2]
    newest = max(revisions, key=lambda r: r["revision"])
    hashes = {p["metadata"]["labels"]["controller-revision-hash"] for p in after.values()}
    assert hashes == {newest["metadata"]["labels"]["controller-revision-hash"]}
    assert newest["metadata"]["name"] == f"roll-{hashes.pop()}"
    status = (await client.get(DAEMONSETS, "roll", "default"))["status"]
    assert status["updatedNumberScheduled"] == 3 and status["observedGeneration"] == 2

    # OnDelete: a template change alone replaces nothing; a deleted pod comes back new.
    ds = await client.get(DAEMONSETS, "roll", "default")
    ds["spec"]["updateStrategy"] = {"type": "OnDelete"}
    ds["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:3"
    await client.update(DAEMONSETS, ds)
    victim = after["sim-node-0"]["metadata"]["name"]
    await client.delete(PODS, victim, "default")
    await eventually(lambda: _image_on(placed(client, "roll"), "sim-node-0", "agent:3"), 10, 0.1)
    images = {n: p["spec"]["containers"][0]["image"]
              for n, p in (await placed(client, "roll")).items()}
    assert images == {"sim-node-0": "agent:3", "sim-node-1": "agent:2",
                      "sim-node-2": "agent:2"}


# --- small async predicates -------------------------------------------------------------------

async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


async def _has(awaitable, **fields) -> bool:
    got = await awaitable
    return all(got.get(k) == v for k, v in fields.items())


async def _count(awaitable, expected: int) -> bool:
    return len(await awaitable) == expected


async def _image_on(awaitable, node: str, image: str) -> bool:
    pod = (await awaitable).get(node)
    return pod is not None and pod["spec"]["containers"][0]["image"] == image
