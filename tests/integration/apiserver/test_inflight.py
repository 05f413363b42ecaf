"""--max-requests-inflight and --max-mutating-requests-inflight with fair queuing (upstream's
API Priority and Fairness, simplified: `flowcontrol`): reads and writes have their seats
apart; over them requests wait in per-user queues served in turn; a full queue or a wait
over the limit is upstream's plain-text 429 with Retry-After: 1; long-running requests,
health probes and system:masters are never queued."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver import flowcontrol
from k8py.server.apiserver.authn import User
from tests.conftest import eventually
from tests.integration.inloop import running_apiserver

TOO_MANY = "Too many requests, please try again later.\n"


async def _client(control: flowcontrol.FlowControl, release: asyncio.Event) -> TestClient:
    @web.middleware
    async def as_user(request, handler):
        masters = request.headers.get("X-Test-Masters") == "1"
        name = request.headers.get("X-Test-User", "alice")
        request[apiserver.USER_KEY] = User(name, ("system:masters",) if masters else ())
        return await handler(request)

    async def held(request):
        await release.wait()
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[apiserver.errors_middleware, as_user,
                                       control.middleware])
    app.router.add_route("*", "/{path:.*}", held)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_over_the_seats_requests_wait_and_a_full_queue_is_429():
    release = asyncio.Event()
    control = flowcontrol.FlowControl(reads=2, writes=1, per_flow=2)
    reads_pool, writes_pool = control.pools[False], control.pools[True]
    client = await _client(control, release)
    try:
        reads = [asyncio.create_task(client.get(f"/api/v1/namespaces/default/pods/p{i}"))
                 for i in range(4)]
        write = asyncio.create_task(client.post("/api/v1/namespaces/default/configmaps"))
        await eventually(lambda: reads_pool.serving == 2 and reads_pool.queued == 2 and
                         writes_pool.serving == 1, timeout=10, what="seats taken, two queued")
        refused = await client.get("/api/v1/namespaces/default/pods/p9")
        assert refused.status == 429 and refused.headers["Retry-After"] == "1"
        assert refused.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await refused.text() == TOO_MANY
        # another user's queue is its own
        bob = asyncio.create_task(client.get("/api/v1/pods/b", headers={"X-Test-User": "bob"}))
        # not counted: long-running requests, probes and the privileged group
        passing = [asyncio.create_task(client.get(path, headers=headers)) for path, headers in (
            ("/api/v1/namespaces/default/pods?watch=true", {}),
            ("/api/v1/watch/namespaces/default/pods", {}),
            ("/api/v1/namespaces/default/pods/p/log", {}),
            ("/api/v1/namespaces/default/pods/p/exec", {}),
            ("/readyz", {}),
            ("/api/v1/namespaces/default/pods/p9", {"X-Test-Masters": "1"}))]
        await eventually(lambda: reads_pool.queued == 3, timeout=10, what="bob queued")
        release.set()
        for task in [*reads, write, bob, *passing]:
            assert (await task).status == 200
        assert (reads_pool.serving, reads_pool.queued, writes_pool.serving) == (0, 0, 0)
        assert (await client.get("/api/v1/namespaces/default/pods/p4")).status == 200
    finally:
        release.set()
        await client.close()


async def test_a_request_waiting_too_long_is_429():
    release = asyncio.Event()
    control = flowcontrol.FlowControl(reads=1, writes=1, wait_limit=0.2)
    client = await _client(control, release)
    try:
        held = asyncio.create_task(client.get("/api/v1/pods/held"))
        await eventually(lambda: control.pools[False].serving == 1, timeout=10, what="held")
        waited = await client.get("/api/v1/pods/late")
        assert waited.status == 429 and await waited.text() == TOO_MANY
        assert control.pools[False].queued == 0
        release.set()
        assert (await held).status == 200
    finally:
        release.set()
        await client.close()


async def test_a_queued_request_whose_client_left_is_dropped():
    release = asyncio.Event()
    control = flowcontrol.FlowControl(reads=1, writes=1)
    pool = control.pools[False]
    client = await _client(control, release)
    try:
        held = asyncio.create_task(client.get("/api/v1/pods/held"))
        await eventually(lambda: pool.serving == 1, timeout=10, what="held")
        leaving = asyncio.create_task(client.get("/api/v1/pods/leaving"))
        await eventually(lambda: pool.queued == 1, timeout=10, what="queued")
        leaving.cancel()  # the client closes its connection
        await eventually(lambda: pool.queued == 0, timeout=10, what="the queue to empty")
        release.set()
        assert (await held).status == 200
        assert pool.serving == 0
    finally:
        release.set()
        await client.close()


async def test_zero_means_no_limit():
    release = asyncio.Event()
    control = flowcontrol.FlowControl(reads=0, writes=0)
    client = await _client(control, release)
    try:
        held = [asyncio.create_task(client.get(f"/api/v1/pods/{i}")) for i in range(20)]
        release.set()
        assert [(await task).status for task in held] == [200] * 20
    finally:
        release.set()
        await client.close()


async def test_one_users_flood_does_not_starve_another_over_real_https(tmp_path):
    """alice floods a slow endpoint with 80 requests at once over 2 read seats; bob's
    requests to the real API go in between hers, and none of his is refused."""
    def slow_route(app: web.Application) -> None:
        async def slow(request):
            await asyncio.sleep(0.05)  # a request that takes its time on the server
            return web.json_response({})
        app.router.add_get("/slow", slow)

    async with running_apiserver(tmp_path, customize=slow_route, users=("alice", "bob"),
                                 max_requests_inflight=2) as server:
        pool = server.app[apiserver.FLOW_CONTROL_KEY].pools[False]

        def session(user: str) -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=server.ssl(client_cert=False), limit=100),
                headers={"Authorization": f"Bearer {server.user_tokens[user]}"})

        async with session("alice") as alice, session("bob") as bob:
            async def flood_one() -> tuple[int, str]:
                async with alice.get(server.url + "/slow") as response:
                    return response.status, response.headers.get("Retry-After", "")

            flood = [asyncio.create_task(flood_one()) for _ in range(80)]
            await eventually(lambda: pool.queued >= 20, timeout=20, what="alice's queue")
            latencies = []
            for _ in range(10):
                start = time.monotonic()
                async with bob.get(server.url + "/api/v1/namespaces/default/configmaps") as r:
                    assert r.status == 200, await r.text()
                latencies.append(time.monotonic() - start)
            answers = await asyncio.gather(*flood)
        print(f"bob's latencies during alice's flood (s): "
              f"{', '.join(f'{t:.3f}' for t in latencies)}")
        assert pool.rejected["bob"] == 0
        assert {a for a in answers if a[0] != 200} == {(429, "1")}  # her queue overflowed
        assert pool.rejected["alice"] >= 1 and pool.waited["alice"] >= 20
        assert (pool.serving, pool.queued) == (0, 0)
