"""What a real client reads off the wire, byte for byte, for the answers clients compare
(see tests/unit/api/test_encoding.py for where the expected bytes come from)."""

from __future__ import annotations

import json
import re

import aiohttp

CM = "/api/v1/namespaces/default/configmaps"


async def _raw(session, method, url, **kwargs) -> tuple[int, bytes]:
    async with session.request(method, url, **kwargs) as response:
        return response.status, await response.read()


async def test_unauthorized_and_not_found_bytes(server):
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=server.ssl(client_cert=False))) as anonymous:
        status, body = await _raw(anonymous, "GET", server.url + CM)
    assert status == 401
    assert body == (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                    b'"message":"Unauthorized","reason":"Unauthorized","code":401}\n')
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
        status, body = await _raw(session, "GET", server.url + "/apis/batch/v1/namespaces/"
                                  "default/cronjobs/cronjob-name")
    assert status == 404
    assert body == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"cronjobs.batch \\"cronjob-name\\" not found","reason":"NotFound",'
        b'"details":{"name":"cronjob-name","group":"batch","kind":"cronjobs"},"code":404}\n')


async def test_objects_and_lists_in_go_order(server):
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
        # a body in any order, as the Python client may send it
        status, created = await _raw(session, "POST", server.url + CM, data=json.dumps(
            {"data": {"k": "<v>"}, "metadata": {"labels": {"a": "b"}, "name": "order"},
             "kind": "ConfigMap", "apiVersion": "v1"}),
            headers={"Content-Type": "application/json"})
        assert status == 201
        status, got = await _raw(session, "GET", server.url + CM + "/order")
        status, listed = await _raw(session, "GET", server.url + CM)
    shape = re.compile(
        rb'^\{"kind":"ConfigMap","apiVersion":"v1","metadata":\{"name":"order",'
        rb'"namespace":"default","uid":"[0-9a-f-]{36}","resourceVersion":"\d+",'
        rb'"creationTimestamp":"[0-9TZ:-]+","labels":\{"a":"b"\},"managedFields":\[.*\]\},'
        rb'"data":\{"k":"\\u003cv\\u003e"\}\}$')
    assert shape.match(created.rstrip(b"\n")), created
    assert shape.match(got.rstrip(b"\n")), got
    assert got.endswith(b"}\n") and created.endswith(b"}\n")
    assert json.loads(got) == json.loads(created)
    assert re.match(rb'^\{"kind":"ConfigMapList","apiVersion":"v1","metadata":'
                    rb'\{"resourceVersion":"\d+"\},"items":\[\{"kind":"ConfigMap",', listed)
    assert listed.endswith(b"]}\n")
