"""The REST API against a real server: identity, discovery, CRUD, lists, watch, errors."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from k8py.server.store import etcd_pb2 as pb
from k8py.server.store.etcd import EtcdBackend

CM = "/api/v1/namespaces/default/configmaps"
TEMPLATE = {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def configmap(name, **data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def test_anonymous_gets_health_and_version_only(server):
    connector = aiohttp.TCPConnector(ssl=server.ssl(client_cert=False))
    async with aiohttp.ClientSession(connector=connector) as session:
        for path in ("/healthz", "/livez", "/readyz"):
            async with session.get(server.url + path) as r:
                assert r.status == 200 and await r.text() == "ok"
        async with session.get(server.url + "/version") as r:
            version = await r.json()
            assert version["minor"] == "32" and "+k8py" in version["gitVersion"]
        async with session.get(server.url + "/api/v1/namespaces") as r:
            assert r.status == 401
            body = await r.json()
            assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
        headers = {"Authorization": "Bearer wrong"}
        async with session.get(server.url + "/api/v1/namespaces", headers=headers) as r:
            assert r.status == 401
        headers = {"Authorization": f"Bearer {server.token}"}
        async with session.get(server.url + "/api/v1/namespaces", headers=headers) as r:
            assert r.status == 200
            names = [ns["metadata"]["name"] for ns in (await r.json())["items"]]
            assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(names)


async def test_discovery_legacy_and_aggregated(client):
    status, body = await client.request("GET", "/api")
    assert status == 200 and body["versions"] == ["v1"]
    status, body = await client.request("GET", "/apis")
    assert "apps" in [g["name"] for g in body["groups"]]
    status, body = await client.request("GET", "/apis/apps/v1")
    deployments = [r for r in body["resources"] if r["name"] == "deployments"][0]
    assert deployments["namespaced"] and deployments["shortNames"] == ["deploy"]
    assert "deployments/scale" in [r["name"] for r in body["resources"]]
    accept = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json")
    async with client.session.get(client.server.url + "/apis",
                                  headers={"Accept": accept}) as r:
        assert r.headers["Content-Type"] == (
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
        body = await r.json(content_type=None)
        assert body["kind"] == "APIGroupDiscoveryList"
        apps = [g for g in body["items"] if g["metadata"]["name"] == "apps"][0]
        assert apps["versions"][0]["freshness"] == "Current"
    status, _ = await client.request("GET", "/apis/nope/v1")
    assert status == 404


async def test_create_get_update_delete(client):
    status, created = await client.request("POST", CM, configmap("a", k="v"))
    assert status == 201
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["uid"] and meta["creationTimestamp"]
    assert "generation" not in meta
    status, got = await client.request("GET", f"{CM}/a")
    assert status == 200 and got == created

    status, body = await client.request("POST", CM, configmap("a"))
    assert status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'configmaps "a" already exists'

    updated = {**got, "data": {"k": "v2"}}
    status, after = await client.request("PUT", f"{CM}/a", updated)
    assert status == 200 and after["data"] == {"k": "v2"}
    assert int(after["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert after["metadata"]["uid"] == meta["uid"]

    status, body = await client.request("PUT", f"{CM}/a", updated)  # stale resourceVersion
    assert status == 409 and body["reason"] == "Conflict"

    status, body = await client.request("DELETE", f"{CM}/a")
    assert status == 200 and body["status"] == "Success"
    status, body = await client.request("GET", f"{CM}/a")
    assert status == 404 and body["message"] == 'configmaps "a" not found'


async def test_generate_name_and_defaults(client):
    status, created = await client.request(
        "POST", "/api/v1/namespaces/default/secrets",
        {"metadata": {"generateName": "tok-"}, "stringData": {"p": "hello"}},
    )
    assert status == 201
    assert created["metadata"]["name"].startswith("tok-")
    assert len(created["metadata"]["name"]) == len("tok-") + 5
    assert created["data"] == {"p": "aGVsbG8="} and "stringData" not in created
    assert created["type"] == "Opaque" and created["kind"] == "Secret"


async def test_generation_counts_spec_changes_only(client):
    path = "/apis/apps/v1/namespaces/default/deployments"
    deployment = {"metadata": {"name": "d"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": TEMPLATE}}
    status, created = await client.request("POST", path, deployment)
    assert status == 201 and created["metadata"]["generation"] == 1
    status, patched = await client.request(
        "PATCH", f"{path}/d", {"metadata": {"labels": {"a": "b"}}},
        content_type="application/merge-patch+json")
    assert patched["metadata"]["generation"] == 1
    status, patched = await client.request(
        "PATCH", f"{path}/d", {"spec": {"replicas": 3}},
        content_type="application/merge-patch+json")
    assert patched["metadata"]["generation"] == 2
    # The main resource ignores status; the status subresource changes only status.
    status, patched = await client.request(
        "PATCH", f"{path}/d", {"status": {"replicas": 9}},
        content_type="application/merge-patch+json")
    assert patched["status"] == {}  # as created: upstream's empty DeploymentStatus
    status, patched = await client.request(
        "PATCH", f"{path}/d/status", {"status": {"replicas": 3}, "spec": {"replicas": 7}},
        content_type="application/merge-patch+json")
    assert status == 200, patched
    assert patched["status"] == {"replicas": 3} and patched["spec"]["replicas"] == 3


async def test_json_patch_and_failed_test(client):
    await client.request("POST", CM, configmap("p", a="1"))
    status, body = await client.request(
        "PATCH", f"{CM}/p", [{"op": "add", "path": "/data/b", "value": "2"}],
        content_type="application/json-patch+json")
    assert status == 200 and body["data"] == {"a": "1", "b": "2"}
    status, body = await client.request(
        "PATCH", f"{CM}/p", [{"op": "test", "path": "/data/a", "value": "nope"}],
        content_type="application/json-patch+json")
    assert status == 422 and body["kind"] == "Status"


async def test_list_with_selectors_limit_and_continue(client):
    for i in range(7):
        cm = configmap(f"c{i}")
        cm["metadata"]["labels"] = {"tier": "web" if i % 2 else "db", "n": str(i)}
        await client.request("POST", CM, cm)
    status, body = await client.request("GET", CM, labelSelector="tier=web")
    assert [i["metadata"]["name"] for i in body["items"]] == ["c1", "c3", "c5"]
    status, body = await client.request("GET", CM, labelSelector="tier in (db),n!=0")
    assert [i["metadata"]["name"] for i in body["items"]] == ["c2", "c4", "c6"]
    status, body = await client.request("GET", CM, fieldSelector="metadata.name=c4")
    assert [i["metadata"]["name"] for i in body["items"]] == ["c4"]
    status, body = await client.request("GET", CM, labelSelector="bad key!")
    assert status == 400

    names, token, revision = [], None, None
    while True:
        params = {"limit": "3"}
        if token:
            params["continue"] = token
        status, page = await client.request("GET", CM, **params)
        assert status == 200
        names += [i["metadata"]["name"] for i in page["items"]]
        revision = revision or page["metadata"]["resourceVersion"]
        assert page["metadata"]["resourceVersion"] == revision
        token = page["metadata"].get("continue")
        if not token:
            break
        await client.request("POST", CM, configmap(f"late{len(names)}"))  # not in the snapshot
    assert names == [f"c{i}" for i in range(7)]
    status, body = await client.request("GET", CM, limit="2", **{"continue": "garbage"})
    assert status == 400


async def test_all_namespaces_and_cluster_scope(client):
    await client.request("POST", "/api/v1/namespaces", {"metadata": {"name": "other"}})
    await client.request("POST", "/api/v1/namespaces/other/configmaps", configmap("x"))
    await client.request("POST", CM, configmap("y"))
    status, body = await client.request("GET", "/api/v1/configmaps")
    assert {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in body["items"]} >= {
        ("other", "x"), ("default", "y")}
    status, ns = await client.request("GET", "/api/v1/namespaces/other")
    assert status == 200 and ns["status"]["phase"] == "Active"
    status, body = await client.request("POST", "/api/v1/namespaces/missing/configmaps",
                                        configmap("z"))
    assert status == 404 and body["message"] == 'namespaces "missing" not found'


async def test_finalizers_hold_deletion_until_removed(client):
    cm = configmap("f")
    cm["metadata"]["finalizers"] = ["example.com/hold"]
    await client.request("POST", CM, cm)
    status, body = await client.request("DELETE", f"{CM}/f")
    # upstream's delete handler: 200 with the object; 202 only for orphanDependents=false
    assert status == 200 and body["metadata"]["deletionTimestamp"]
    status, body = await client.request("GET", f"{CM}/f")
    assert status == 200
    status, body = await client.request(
        "PATCH", f"{CM}/f", {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json")
    assert status == 200
    status, _ = await client.request("GET", f"{CM}/f")
    assert status == 404


async def test_dry_run_writes_nothing(client):
    status, body = await client.request("POST", CM, configmap("dry"), dryRun="All")
    assert status == 201 and body["metadata"]["name"] == "dry"
    status, _ = await client.request("GET", f"{CM}/dry")
    assert status == 404


async def read_events(response, count, timeout=5):
    events = []
    async def read():
        while len(events) < count:
            line = await response.content.readline()
            if not line:
                break
            events.append(json.loads(line))
    await asyncio.wait_for(read(), timeout)
    return events


async def test_watch_from_version_and_with_initial_state(client):
    _, first = await client.request("POST", CM, configmap("w1"))
    rv = first["metadata"]["resourceVersion"]
    url = client.server.url + CM
    async with client.session.get(url, params={"watch": "true", "resourceVersion": rv}) as r:
        assert r.status == 200
        _, second = await client.request("POST", CM, configmap("w2"))
        await client.request("PATCH", f"{CM}/w2", {"data": {"x": "1"}},
                             content_type="application/merge-patch+json")
        await client.request("DELETE", f"{CM}/w1")
        events = await read_events(r, 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w2"), ("MODIFIED", "w2"), ("DELETED", "w1")]
    # No resourceVersion: current objects first, as ADDED.
    async with client.session.get(url, params={"watch": "1"}) as r:
        events = await read_events(r, 1)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "w2"


async def test_watch_with_label_selector_sees_objects_leave_and_enter(client):
    cm = configmap("sel")
    cm["metadata"]["labels"] = {"app": "a"}
    _, created = await client.request("POST", CM, cm)
    params = {"watch": "true", "labelSelector": "app=a",
              "resourceVersion": created["metadata"]["resourceVersion"]}
    async with client.session.get(client.server.url + CM, params=params) as r:
        for value in ("b", "a"):
            await client.request("PATCH", f"{CM}/sel", {"metadata": {"labels": {"app": value}}},
                                 content_type="application/merge-patch+json")
        events = await read_events(r, 2)
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


async def test_watch_from_compacted_version_is_410_in_stream(client, server):
    for i in range(5):
        await client.request("POST", CM, configmap(f"old{i}"))
    await server.store.compact(server.store.revision)
    params = {"watch": "true", "resourceVersion": "1"}
    async with client.session.get(client.server.url + CM, params=params) as r:
        assert r.status == 200
        events = await read_events(r, 1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


async def test_a_resource_version_the_store_has_not_reached(client):
    """upstream's watch cache: a read or watch at a resourceVersion beyond the store's waits
    3 s for it, then gets 504 "Too large resource version" (a watch as an ERROR event), so a
    client holding a version from before a restore lists again; a version the store has
    reached reads the latest (not older than it), never history."""
    _, created = await client.request("POST", CM, configmap("fresh"))
    rv = int(created["metadata"]["resourceVersion"])
    _, changed = await client.request("PATCH", f"{CM}/fresh", {"data": {"v": "2"}},
                                      content_type="application/merge-patch+json")
    status, got = await client.request("GET", f"{CM}/fresh?resourceVersion={rv}")
    assert status == 200 and got["data"] == {"v": "2"}
    status, listed = await client.request("GET", f"{CM}?resourceVersion={rv}")
    assert status == 200 and int(listed["metadata"]["resourceVersion"]) >= \
        int(changed["metadata"]["resourceVersion"])

    ahead = int(changed["metadata"]["resourceVersion"]) + 1000
    for path in (f"{CM}/fresh?resourceVersion={ahead}", f"{CM}?resourceVersion={ahead}",
                 f"{CM}?resourceVersion={ahead}&resourceVersionMatch=NotOlderThan"):
        status, body = await client.request("GET", path)
        assert status == 504, (path, body)
        assert body["reason"] == "Timeout"
        assert body["message"].startswith(f"Timeout: Too large resource version: {ahead}, "
                                          "current: ")
        assert body["details"] == {"causes": [{"reason": "ResourceVersionTooLarge",
                                               "message": "Too large resource version"}],
                                   "retryAfterSeconds": 1}
    params = {"watch": "true", "resourceVersion": str(ahead)}
    async with client.session.get(client.server.url + CM, params=params) as r:
        assert r.status == 200
        events = await read_events(r, 1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 504
    assert events[0]["object"]["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


async def list_version(client, path: str = CM) -> str:
    """A collection's resourceVersion now (on a shared etcd, "1" may be long compacted)."""
    status, body = await client.request("GET", path)
    assert status == 200, body
    return body["metadata"]["resourceVersion"]


async def test_watch_timeout_ends_stream(client):
    pods = "/api/v1/namespaces/default/pods"
    params = {"watch": "true", "timeoutSeconds": "1",
              "resourceVersion": await list_version(client, pods)}
    async with client.session.get(client.server.url + "/api/v1/namespaces/default/pods",
                                  params=params) as r:
        body = await asyncio.wait_for(r.read(), 10)
    assert body == b""


async def test_scale_subresource_changes_only_replicas_with_cas(client):
    path = "/apis/apps/v1/namespaces/default/deployments"
    template = {**TEMPLATE, "metadata": {"labels": {"a": "b", "t": "x"}}}
    status, _ = await client.request("POST", path, {"metadata": {"name": "s"}, "spec": {
        "replicas": 1, "template": template,
        "selector": {"matchLabels": {"a": "b"},
                     "matchExpressions": [{"key": "t", "operator": "In",
                                           "values": ["y", "x"]}]}}})
    assert status == 201
    status, scale = await client.request("GET", f"{path}/s/scale")
    assert status == 200 and scale["status"]["selector"] == "a=b,t in (x,y)"
    status, body = await client.request("PUT", f"{path}/s/scale",
                                        {**scale, "spec": {"replicas": 3}})
    assert status == 200 and body["spec"]["replicas"] == 3
    status, body = await client.request("PUT", f"{path}/s/scale",
                                        {**scale, "spec": {"replicas": 5}})
    assert status == 409, "the Scale carried a stale resourceVersion"
    status, body = await client.request("PATCH", f"{path}/s/scale", {"spec": {"replicas": -1}},
                                        content_type="application/merge-patch+json")
    assert status == 422
    _, deployment = await client.request("GET", f"{path}/s")
    assert deployment["spec"]["replicas"] == 3 and deployment["metadata"]["generation"] == 2
    status, _ = await client.request("GET", "/api/v1/namespaces/default/configmaps/x/scale")
    assert status == 404


async def test_pod_deletion_is_graceful_only_once_bound(client):
    pods = "/api/v1/namespaces/default/pods"
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    await client.request("POST", pods, {"metadata": {"name": "free"}, "spec": spec})
    status, _ = await client.request("DELETE", f"{pods}/free")
    assert status == 200
    status, _ = await client.request("GET", f"{pods}/free")
    assert status == 404, "a pod on no node goes at once"

    bound = {**spec, "nodeName": "n1", "terminationGracePeriodSeconds": 20}
    await client.request("POST", pods, {"metadata": {"name": "bound"}, "spec": bound})
    status, body = await client.request("DELETE", f"{pods}/bound")
    assert status == 200 and body["metadata"]["deletionGracePeriodSeconds"] == 20
    assert body["metadata"]["deletionTimestamp"]
    status, body = await client.request("DELETE", f"{pods}/bound",
                                        {"gracePeriodSeconds": 5})
    assert body["metadata"]["deletionGracePeriodSeconds"] == 5, "a shorter grace wins"
    status, body = await client.request("DELETE", f"{pods}/bound",
                                        {"gracePeriodSeconds": 0})
    status, _ = await client.request("GET", f"{pods}/bound")
    assert status == 404, "grace 0 (what the kubelet sends) removes it"


async def test_events_get_a_time_to_live(client, server):
    status, event = await client.request("POST", "/api/v1/namespaces/default/events", {
        "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p"},
        "reason": "Test", "message": "hello", "type": "Normal"})
    assert status == 201
    key = "/registry/core/events/default/e1"
    if isinstance(server.store, EtcdBackend):  # an etcd lease, as kube-apiserver's
        found = await server.store.client.call("KV", "Range", pb.RangeRequest(
            key=key.encode()), write=False)
        assert found.kvs[0].lease, "events expire, as upstream's --event-ttl"
        return
    entry = server.store._index[key]
    assert entry.expires > 0, "events expire, as upstream's --event-ttl"


async def test_binding_sets_the_node_once(client):
    pods = "/api/v1/namespaces/default/pods"
    await client.request("POST", pods, {"metadata": {"name": "b"}, "spec": {
        "containers": [{"name": "c", "image": "x"}]}})
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"},
               "target": {"kind": "Node", "name": "node-1"}}
    status, _ = await client.request("POST", f"{pods}/b/binding", binding)
    assert status == 201
    _, pod = await client.request("GET", f"{pods}/b")
    assert pod["spec"]["nodeName"] == "node-1"
    assert {"type": "PodScheduled", "status": "True"}.items() <= pod["status"][
        "conditions"][0].items()
    status, err = await client.request("POST", f"{pods}/b/binding", binding)
    assert status == 409 and "already assigned" in err["message"]


async def test_eviction_honours_disruption_budgets(client):
    pods = "/api/v1/namespaces/default/pods"
    pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"
    for name in ("e1", "e2"):
        await client.request("POST", pods, {"metadata": {"name": name, "labels": {"app": "e"}},
                                            "spec": {"containers": [{"name": "c",
                                                                     "image": "x"}]}})
        _, pod = await client.request("GET", f"{pods}/{name}")
        await client.request("PUT", f"{pods}/{name}/status",
                             {**pod, "status": {"phase": "Running"}})
    _, pdb = await client.request("POST", pdbs, {"metadata": {"name": "budget"}, "spec": {
        "minAvailable": 1, "selector": {"matchLabels": {"app": "e"}}}})
    await client.request("PUT", f"{pdbs}/budget/status", {**pdb, "status": {
        "disruptionsAllowed": 1, "observedGeneration": 1, "currentHealthy": 2,
        "desiredHealthy": 1, "expectedPods": 2}})
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "e1"}}
    status, _ = await client.request("POST", f"{pods}/e1/eviction", eviction)
    assert status == 201
    status, _ = await client.request("GET", f"{pods}/e1")
    assert status == 404
    status, err = await client.request("POST", f"{pods}/e2/eviction",
                                       {**eviction, "metadata": {"name": "e2"}})
    assert status == 429 and err["reason"] == "TooManyRequests"
    assert err["message"] == ("Cannot evict pod as it would violate the pod's disruption "
                              "budget.")
    # as upstream: why, and no retryAfterSeconds (kubectl drain sees it and retries itself)
    assert err["details"] == {"causes": [{
        "reason": "DisruptionBudget",
        "message": "The disruption budget budget needs 1 healthy pods and has 2 currently"}]}
    status, _ = await client.request("GET", f"{pods}/e2")
    assert status == 200


async def test_upstream_defaults_fill_in(client):
    _, pod = await client.request("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": "defaults"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [
            {"containerPort": 80}]}]}})
    spec = pod["spec"]
    assert (spec["restartPolicy"], spec["dnsPolicy"], spec["terminationGracePeriodSeconds"],
            spec["schedulerName"]) == ("Always", "ClusterFirst", 30, "default-scheduler")
    container = spec["containers"][0]
    assert container["imagePullPolicy"] == "Always"  # no tag means latest
    assert container["ports"][0]["protocol"] == "TCP"
    _, svc = await client.request("POST", "/api/v1/namespaces/default/services", {
        "metadata": {"name": "defaults"}, "spec": {"ports": [{"port": 80}]}})
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    _, d = await client.request("POST", "/apis/apps/v1/namespaces/default/deployments", {
        "metadata": {"name": "defaults"}, "spec": {
            "selector": {"matchLabels": {"a": "b"}}, "template": TEMPLATE}})
    assert d["spec"]["replicas"] == 1 and d["spec"]["revisionHistoryLimit"] == 10
    assert d["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {
        "maxUnavailable": "25%", "maxSurge": "25%"}}


async def test_deletecollection_with_selector(client):
    for name, tier in (("dc1", "a"), ("dc2", "a"), ("dc3", "b")):
        await client.request("POST", CM, {"metadata": {"name": name, "labels": {"t": tier}}})
    status, body = await client.request("DELETE", CM, labelSelector="t=a")
    assert status == 200 and sorted(i["metadata"]["name"] for i in body["items"]) == [
        "dc1", "dc2"]
    _, left = await client.request("GET", CM)
    assert [i["metadata"]["name"] for i in left["items"]] == ["dc3"]


async def test_watch_bookmarks(client, monkeypatch):
    from k8py.server.apiserver import watchserving

    monkeypatch.setattr(watchserving, "BOOKMARK_INTERVAL", 0.2)
    await client.request("POST", CM, configmap("marked"))
    rv = await list_version(client)
    params = {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": rv,
              "timeoutSeconds": "5"}
    async with client.session.get(client.server.url + CM, params=params) as r:
        events = await read_events(r, 1)
    assert events[0]["type"] == "BOOKMARK"
    assert events[0]["object"]["kind"] == "ConfigMap"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)


async def test_paging_across_namespaces(client):
    """`kubectl get -A` pages with limit=500: continue tokens must carry namespace/name."""
    for ns in ("pa", "pb"):
        await client.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        for i in range(3):
            await client.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                                 {"metadata": {"name": f"c{i}"}})
    seen, token = [], None
    while True:
        params = {"limit": "2", **({"continue": token} if token else {})}
        status, page = await client.request("GET", "/api/v1/configmaps", **params)
        assert status == 200, page
        seen += [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert seen == [(ns, f"c{i}") for ns in ("pa", "pb") for i in range(3)]


async def test_concurrent_patches_and_unconditional_updates_all_land(client):
    """Upstream retries a patch whose object moved under it (GuaranteedUpdate): a label
    patch never fails just because another writer got in first."""
    import asyncio

    await client.request("POST", CM, {"metadata": {"name": "busy"}})
    results = await asyncio.gather(*(
        client.request("PATCH", f"{CM}/busy", {"metadata": {"labels": {f"k{i}": "v"}}},
                       content_type="application/merge-patch+json") for i in range(20)))
    assert [status for status, _ in results] == [200] * 20
    _, obj = await client.request("GET", f"{CM}/busy")
    assert set(obj["metadata"]["labels"]) == {f"k{i}" for i in range(20)}
    # Pinned to a version: the caller sees the 409.
    status, _ = await client.request(
        "PATCH", f"{CM}/busy", {"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}},
        content_type="application/merge-patch+json")
    assert status == 409
