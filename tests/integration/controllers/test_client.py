"""The client machinery against a real API server: both transports raise the same errors,
informers follow changes and relist after a 410, leader election hands over."""

from __future__ import annotations

import asyncio

import pytest

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from k8py.client.informer import Informer, by_label
from k8py.client.leaderelection import LeaderElector
from tests.conftest import eventually

CONFIGMAPS = builtin("v1", "configmaps")


def configmap(name: str, **labels) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "data": {"k": "v"}}


@pytest.fixture
async def http_client(cluster):
    client = Client(HttpTransport.from_kubeconfig(cluster.kubeconfig))
    yield client
    await client.close()


async def test_both_transports_give_the_same_errors(cluster, http_client):
    for client in (cluster.client, http_client):
        with pytest.raises(errors.NotFound):
            await client.get(CONFIGMAPS, "missing", "default")
        created = await client.create(CONFIGMAPS, configmap(f"cm-{id(client)}"))
        with pytest.raises(errors.AlreadyExists):
            await client.create(CONFIGMAPS, configmap(f"cm-{id(client)}"))
        stale = {**created, "metadata": {**created["metadata"], "resourceVersion": "1"}}
        with pytest.raises(errors.Conflict):
            await client.update(CONFIGMAPS, stale)
        with pytest.raises(errors.Invalid):
            await client.create(CONFIGMAPS, configmap("Bad_Name"))


async def test_informer_follows_changes_with_indexes(cluster, http_client):
    for client in (cluster.client, http_client):
        informer = Informer(client, CONFIGMAPS, "default", label_selector="watched=yes")
        informer.add_index("tier", by_label("tier"))
        seen = []
        informer.add_handlers(lambda obj: seen.append(("add", obj["metadata"]["name"])),
                              lambda old, new: seen.append(("update", new["metadata"]["name"])),
                              lambda obj: seen.append(("delete", obj["metadata"]["name"])))
        task = asyncio.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.synced.wait(), 5)
            name = f"inf-{id(client)}"
            await client.create(CONFIGMAPS, configmap(name, watched="yes", tier="a"))
            await client.create(CONFIGMAPS, configmap(name + "-x", watched="no"))
            await eventually(lambda: informer.get(f"default/{name}") is not None, 5)
            assert [o["metadata"]["name"] for o in informer.by_index("tier", "a")] == [name]
            await client.patch(CONFIGMAPS, name, {"metadata": {"labels": {"tier": "b"}}},
                               "default")
            await eventually(lambda: informer.by_index("tier", "b"), 5)
            assert informer.by_index("tier", "a") == []
            await client.delete(CONFIGMAPS, name, "default")
            await eventually(lambda: informer.get(f"default/{name}") is None, 5)
            assert seen == [("add", name), ("update", name), ("delete", name)]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_informer_relists_after_a_compacted_version(cluster):
    client = cluster.client
    informer = Informer(client, CONFIGMAPS, "default")
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        informer.resource_version = "1"  # as if the informer had been away for long
        await client.create(CONFIGMAPS, configmap("after-gap"))
        store = client.transport.handler.objects.backend
        await store.compact(store.revision)
        task = asyncio.create_task(informer.run())
        await eventually(lambda: informer.get("default/after-gap") is not None, 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_leader_election_hands_over(cluster):
    client = cluster.client
    first = LeaderElector(client, "default", "lock", "first", lease_duration=2,
                          renew_deadline=1.5, retry_period=0.2)
    second = LeaderElector(client, "default", "lock", "second", lease_duration=2,
                           renew_deadline=1.5, retry_period=0.2)
    leading = []

    async def lead(name):
        leading.append(name)
        await asyncio.Event().wait()

    one = asyncio.create_task(first.run(lambda: lead("first")))
    await eventually(lambda: leading == ["first"], 5)
    two = asyncio.create_task(second.run(lambda: lead("second")))
    await asyncio.sleep(0.5)
    assert leading == ["first"]  # the lease is held and renewed
    one.cancel()
    await asyncio.gather(one, return_exceptions=True)
    await first.release()
    await eventually(lambda: leading == ["first", "second"], 5)
    two.cancel()
    await asyncio.gather(two, return_exceptions=True)
