"""A real API server in the test's event loop (`tests.integration.inloop`), on a memory and
a SQLite store; and an admin HTTP client for it."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.integration.inloop import Server, free_port, running_apiserver  # noqa: F401


@pytest.fixture(params=["memory", "sqlite"])
async def server(request, tmp_path):
    async with running_apiserver(tmp_path, "memory://" if request.param == "memory" else ""
                                 ) as running:
        yield running


class Client:
    """Minimal admin client: JSON in, (status, JSON) out."""

    def __init__(self, server: Server, session: aiohttp.ClientSession):
        self.server = server
        self.session = session

    async def request(self, method: str, path: str, body=None, *, raw: bytes | None = None,
                      content_type: str = "application/json", **params):
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(method, self.server.url + path, data=data,
                                        headers=headers, params=params) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


@pytest.fixture
async def client(server):
    connector = aiohttp.TCPConnector(ssl=server.ssl())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Client(server, session)
