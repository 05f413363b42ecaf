"""Unconditional writes to one busy object never see a 409: the server reads again and
redoes the change until it wins (upstream's GuaranteedUpdate), on both stores."""

from __future__ import annotations

import asyncio

import aiohttp

CM = "/api/v1/namespaces/default/configmaps"


async def test_16_clients_100_unconditional_patches_each_no_409(server, client):
    await client.request("POST", CM, {"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": "hot"}, "data": {}})
    codes: list[int] = []

    async def writer(i: int, session: aiohttp.ClientSession) -> None:
        for n in range(100):
            async with session.patch(
                    f"{server.url}{CM}/hot", data=f'{{"data": {{"w{i}": "{n}"}}}}',
                    headers={"Content-Type": "application/merge-patch+json"}) as response:
                await response.read()
                codes.append(response.status)

    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.ssl()))
                for _ in range(16)]
    try:
        await asyncio.gather(*(writer(i, s) for i, s in enumerate(sessions)))
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    assert codes.count(200) == 1600, {c: codes.count(c) for c in set(codes)}
    _, body = await client.request("GET", f"{CM}/hot")
    assert body["data"] == {f"w{i}": "99" for i in range(16)}


async def test_delete_of_a_busy_object_is_never_a_409(server, client):
    """A controller writing an object's status all the time does not make a DELETE without
    preconditions fail; a stale precondition still does."""
    for round_ in range(20):
        name = f"busy-{round_}"
        _, created = await client.request("POST", CM, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "finalizers": ["example.com/hold"]}})
        stop = asyncio.Event()

        async def churn() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                await client.request("PATCH", f"{CM}/{name}", raw=(
                    f'{{"metadata": {{"annotations": {{"n": "{n}"}}}}}}').encode(),
                    content_type="application/merge-patch+json")

        churners = [asyncio.create_task(churn()) for _ in range(4)]
        try:
            await asyncio.sleep(0)
            status, body = await client.request("DELETE", f"{CM}/{name}")
            assert status in (200, 202), body
            status, body = await client.request("DELETE", f"{CM}/{name}", {
                "preconditions": {"resourceVersion": created["metadata"]["resourceVersion"]}})
            assert status == 409 and body["reason"] == "Conflict"
        finally:
            stop.set()
            await asyncio.gather(*churners)
        status, _ = await client.request("PATCH", f"{CM}/{name}", raw=(
            b'{"metadata": {"finalizers": null}}'), content_type="application/merge-patch+json")
        assert status == 200
        status, _ = await client.request("GET", f"{CM}/{name}")
        assert status == 404
