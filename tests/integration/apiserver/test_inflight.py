"""--max-requests-inflight and --max-mutating-requests-inflight, as upstream's max-in-flight
filter: reads and writes counted apart, one more than the limit is a 429 Status with
Retry-After: 1 at once; long-running requests (watch, exec, logs, ...) and system:masters
are not counted. Served by the API server's own middleware chain, with handlers held open."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver.authn import User


async def _client(limit: apiserver.InFlightLimit, release: asyncio.Event) -> TestClient:
    @web.middleware
    async def as_user(request, handler):
        masters = request.headers.get("X-Test-Masters") == "1"
        request[apiserver.USER_KEY] = User("alice", ("system:masters",) if masters else ())
        return await handler(request)

    async def held(request):
        await release.wait()
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[apiserver.errors_middleware, as_user,
                                       limit.middleware])
    app.router.add_route("*", "/{path:.*}", held)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_one_more_than_the_limit_is_429_with_retry_after():
    release = asyncio.Event()
    client = await _client(apiserver.InFlightLimit(reads=2, writes=1), release)
    try:
        reads = [asyncio.create_task(client.get(f"/api/v1/namespaces/default/pods/p{i}"))
                 for i in range(2)]
        write = asyncio.create_task(client.post("/api/v1/namespaces/default/configmaps"))
        await asyncio.sleep(0.2)  # all three held in their handlers
        refused = await client.get("/api/v1/namespaces/default/pods/p3")
        assert refused.status == 429 and refused.headers["Retry-After"] == "1"
        body = await refused.json()
        assert (body["kind"], body["reason"], body["message"], body["details"]) == (
            "Status", "TooManyRequests", "Too many requests, please try again later.",
            {"retryAfterSeconds": 1})
        assert (await client.patch("/api/v1/namespaces/default/configmaps/c")).status == 429
        # not counted: long-running requests and the privileged group
        passing = [asyncio.create_task(client.get(path, headers=headers)) for path, headers in (
            ("/api/v1/namespaces/default/pods?watch=true", {}),
            ("/api/v1/watch/namespaces/default/pods", {}),
            ("/api/v1/namespaces/default/pods/p/log", {}),
            ("/api/v1/namespaces/default/pods/p/exec", {}),
            ("/api/v1/namespaces/default/pods/p9", {"X-Test-Masters": "1"}))]
        await asyncio.sleep(0.2)
        release.set()
        for task in [*reads, write, *passing]:
            assert (await task).status == 200
        # the slots are given back
        assert (await client.get("/api/v1/namespaces/default/pods/p4")).status == 200
    finally:
        release.set()
        await client.close()


async def test_zero_means_no_limit():
    release = asyncio.Event()
    client = await _client(apiserver.InFlightLimit(reads=0, writes=0), release)
    try:
        held = [asyncio.create_task(client.get(f"/api/v1/pods/{i}")) for i in range(20)]
        await asyncio.sleep(0.2)
        release.set()
        assert [(await task).status for task in held] == [200] * 20
    finally:
        release.set()
        await client.close()
