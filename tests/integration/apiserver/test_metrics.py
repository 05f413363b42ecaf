"""The API server's /metrics on a real server: requests made show in upstream's metric
names and labels (read with prometheus_client's parser), a watch is counted while it lasts,
store calls are timed, and /metrics is authorized like upstream (anonymous 401, a user
without `get /metrics` 403, the `system:monitoring` group allowed)."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import eventually


async def _scrape(client) -> dict:
    status, text = await client.request("GET", "/metrics")
    assert status == 200, text
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families, family, name, **labels) -> float | None:
    for sample in families[family].samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


async def test_requests_show_in_metrics_with_upstream_labels(client):
    cm = {"metadata": {"name": "m1"}, "data": {"a": "b"}}
    status, _ = await client.request("POST", "/api/v1/namespaces/default/configmaps", cm)
    assert status == 201
    status, _ = await client.request("POST", "/api/v1/namespaces/default/configmaps", cm)
    assert status == 409
    for _ in range(3):
        assert (await client.request("GET", "/api/v1/namespaces/default/configmaps"))[0] == 200
    assert (await client.request("GET", "/api/v1/namespaces/default/configmaps/m1"))[0] == 200
    assert (await client.request("GET", "/apis/apps/v1/deployments"))[0] == 200
    families = await _scrape(client)

    def count(**labels):
        return _value(families, "apiserver_request", "apiserver_request_total",
                      component="apiserver", dry_run="", **labels)
    assert count(verb="POST", group="", version="v1", resource="configmaps", subresource="",
                 scope="resource", code="201") == 1
    assert count(verb="POST", resource="configmaps", code="409") == 1
    assert count(verb="LIST", resource="configmaps", scope="namespace", code="200") == 3
    assert count(verb="GET", resource="configmaps", scope="resource", code="200") == 1
    assert count(verb="LIST", group="apps", version="v1", resource="deployments",
                 scope="cluster", code="200") == 1
    assert _value(families, "apiserver_request_duration_seconds",
                  "apiserver_request_duration_seconds_count", verb="LIST",
                  resource="configmaps", scope="namespace") == 3
    assert _value(families, "apiserver_request_duration_seconds",
                  "apiserver_request_duration_seconds_bucket", verb="LIST",
                  resource="configmaps", le="60") == 3
    # the store: one create written, one refused (the second POST), timed as upstream names it
    assert _value(families, "etcd_request_duration_seconds",
                  "etcd_request_duration_seconds_count", operation="create",
                  type="configmaps") == 2
    assert _value(families, "etcd_requests", "etcd_requests_total", operation="list",
                  type="deployments.apps") >= 1
    kinds = {s.labels["request_kind"] for s in
             families["apiserver_current_inflight_requests"].samples}
    assert kinds == {"readOnly", "mutating"}
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds"):
        assert families[name].samples[0].value > 0


async def test_a_watch_is_a_long_running_request_while_it_lasts(client):
    watch = asyncio.create_task(client.session.get(
        client.server.url + "/api/v1/namespaces/default/pods", params={"watch": "true"}))

    async def watching():
        families = await _scrape(client)
        return _value(families, "apiserver_longrunning_requests",
                      "apiserver_longrunning_requests", verb="WATCH", resource="pods",
                      scope="namespace", component="apiserver") == 1
    try:
        await eventually(watching, timeout=10, what="the watch counted")
    finally:
        response = await watch
        response.close()

    async def ended():
        families = await _scrape(client)
        return _value(families, "apiserver_longrunning_requests",
                      "apiserver_longrunning_requests", verb="WATCH", resource="pods") == 0
    await eventually(ended, timeout=10, what="the watch no longer counted")


async def test_metrics_is_authorized_like_upstream(server, client):
    anonymous = aiohttp.TCPConnector(ssl=server.ssl(client_cert=False))
    async with aiohttp.ClientSession(connector=anonymous) as session:
        async with session.get(server.url + "/metrics") as response:
            assert response.status == 401
    status, body = await client.request("GET", "/metrics")
    assert status == 200
    async with client.session.get(server.url + "/metrics",
                                  headers={"Impersonate-User": "nobody"}) as response:
        assert response.status == 403
        body = await response.json()
    assert body["message"] == ('forbidden: User "nobody" cannot get path "/metrics"')
    async with client.session.get(server.url + "/metrics",
                                  headers={"Impersonate-User": "prometheus",
                                           "Impersonate-Group": "system:monitoring"}
                                  ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        families = {f.name for f in text_string_to_metric_families(await response.text())}
    assert "apiserver_request" in families
