"""Slow, stalled and vanishing clients: the server cuts them off and frees what they held,
answers everyone else meanwhile, and does not log their leaving as an error."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import aiohttp
import pytest

from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver import watchserving
from tests.conftest import eventually
from tests.integration.inloop import running_apiserver

CM = "/api/v1/namespaces/default/configmaps"


@pytest.fixture
async def server(tmp_path):
    async with running_apiserver(tmp_path) as running:
        yield running


def _address(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (EOF or reset)."""
    start = time.monotonic()
    try:
        while await asyncio.wait_for(reader.read(4096), seconds):
            pass
    except (ConnectionError, OSError):
        pass
    return time.monotonic() - start


async def test_half_sent_request_and_stalled_tls_handshake_are_closed(server):
    host, port = _address(server)
    # a TCP connection that never starts its TLS handshake
    stalled_reader, stalled_writer = await asyncio.open_connection(host, port)
    stalled_writer.write(b"\x16\x03\x01")  # the first bytes of a ClientHello, and no more
    # a TLS connection whose request headers never end
    half_reader, half_writer = await asyncio.open_connection(host, port, ssl=server.ssl())
    half_writer.write(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nAccept: application/")
    await asyncio.gather(stalled_writer.drain(), half_writer.drain())
    try:
        # meanwhile the server answers others
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
            async with session.get(server.url + "/readyz") as response:
                assert response.status == 200
        handshake, header = await asyncio.gather(_closed_within(stalled_reader, 60),
                                                 _closed_within(half_reader, 60))
        assert handshake < 60 and header < 60
    finally:
        stalled_writer.close()
        half_writer.close()


async def test_half_sent_body_is_dropped_and_nothing_stored(server, monkeypatch):
    from k8py.server.apiserver import bodies
    monkeypatch.setattr(bodies, "BODY_TIMEOUT", 1.0)
    host, port = _address(server)
    reader, writer = await asyncio.open_connection(host, port, ssl=server.ssl())
    writer.write(b"POST " + CM.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: 1000\r\n\r\n{\"metadata\": {")
    await writer.drain()
    try:
        assert await _closed_within(reader, 30) < 30
    finally:
        writer.close()
    items, _ = await server.store.range("/registry/configmaps/default/"), None
    assert items.items == []


async def test_watcher_that_stops_reading_is_cut_off(server, monkeypatch):
    monkeypatch.setattr(watchserving, "WRITE_TIMEOUT", 1.0)
    slots = server.app[apiserver.REST_KEY].watch_slots
    host, port = _address(server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    reader, writer = await asyncio.open_connection(sock=sock, ssl=server.ssl(),
                                                   server_hostname=host)
    writer.write(f"GET {CM}?watch=true HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    reader._transport.pause_reading()  # from here on, this client reads nothing
    try:
        await eventually(lambda: slots.open == 1, timeout=10, what="the watch to start")
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
            for i in range(40):  # ~20 MB of events: far more than the socket buffers hold
                async with session.post(server.url + CM, json={
                        "metadata": {"name": f"big{i}"}, "data": {"a": "x" * 500_000}}) as r:
                    assert r.status == 201
                if slots.open == 0:
                    break
        await eventually(lambda: slots.open == 0, timeout=30, what="the watch to be cut off")
    finally:
        writer.transport.abort()


async def test_watches_past_the_cap_are_429(server):
    server.app[apiserver.REST_KEY].watch_slots = watchserving.WatchSlots(per_user=2, total=10)
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
        opened = [await session.get(server.url + CM + "?watch=true") for _ in range(2)]
        try:
            assert [r.status for r in opened] == [200, 200]
            async with session.get(server.url + CM + "?watch=true") as third:
                body = await third.json()
                assert third.status == 429 and body["reason"] == "TooManyRequests"
                assert body["details"]["retryAfterSeconds"] == 1
            async with session.get(server.url + CM) as listing:  # other requests still go
                assert listing.status == 200
        finally:
            for response in opened:
                response.close()
        slots = server.app[apiserver.REST_KEY].watch_slots
        await eventually(lambda: slots.open == 0, timeout=10, what="the slots to be freed")
        async with session.get(server.url + CM + "?watch=true&timeoutSeconds=1") as again:
            assert again.status == 200


async def test_client_disconnects_are_not_logged_as_errors(server, caplog):
    host, port = _address(server)
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
        for i in range(50):
            async with session.post(server.url + CM, json={
                    "metadata": {"name": f"c{i}"}, "data": {"a": "x" * 20_000}}) as r:
                assert r.status == 201
    caplog.set_level(logging.DEBUG)
    requests = [f"GET {CM} HTTP/1.1\r\nHost: x\r\n\r\n",
                f"GET {CM}?watch=true HTTP/1.1\r\nHost: x\r\n\r\n",
                f"POST {CM} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 500\r\n\r\n{\"metadata\":"]
    for _ in range(5):
        for request in requests:
            reader, writer = await asyncio.open_connection(host, port, ssl=server.ssl())
            writer.write(request.encode())
            await writer.drain()
            if request.startswith("GET"):
                await reader.read(100)
            else:
                await asyncio.sleep(0.05)
            writer.transport.abort()
    await asyncio.sleep(0.5)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
        async with session.get(server.url + CM + "?limit=1") as response:
            assert response.status == 200 and json.loads(await response.read())["items"]
