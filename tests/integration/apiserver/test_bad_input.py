"""A corpus of bad requests: each gets the right 4xx Status, never a 500 or a hang, and
afterwards the server still answers and nothing was stored."""

from __future__ import annotations

import json

import pytest

CM = "/api/v1/namespaces/default/configmaps"
GOOD = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok"}}


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


ALIAS_BOMB = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
       for i in range(8)]
    + ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: bomb}"]
)

CORPUS = [
    # (description, method, path, raw body, content type, expected code, expected reason)
    ("malformed JSON", "POST", CM, b'{"apiVersion": "v1", ', "application/json", 400,
     "BadRequest"),
    ("malformed YAML", "POST", CM, b"metadata: [unclosed", "application/yaml", 400,
     "BadRequest"),
    ("YAML alias bomb", "POST", CM, ALIAS_BOMB.encode(), "application/yaml", 400,
     "BadRequest"),
    ("two YAML documents", "POST", CM, b"a: 1\n---\nb: 2\n", "application/yaml", 400,
     "BadRequest"),
    ("deep nesting", "POST", CM, nested(100_000).encode(), "application/json", 400,
     "BadRequest"),
    ("nesting just under the parser's limit", "POST", CM, nested(900).encode(),
     "application/json", 400, "BadRequest"),
    ("deep nesting in a patch", "PATCH", CM + "/ghost", nested(900).encode(),
     "application/merge-patch+json", 400, "BadRequest"),
    ("not an object", "POST", CM, b"[1, 2, 3]", "application/json", 400, "BadRequest"),
    ("invalid UTF-8", "POST", CM, b'{"metadata": {"name": "\xff"}}', "application/json", 400,
     "BadRequest"),
    ("over 3 MiB", "POST", CM,
     json.dumps({**GOOD, "data": {"big": "x" * (3 * 1024 * 1024)}}).encode(),
     "application/json", 413, "RequestEntityTooLarge"),
    ("wrong kind for URL", "POST", CM,
     json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}).encode(),
     "application/json", 400, "BadRequest"),
    ("wrong apiVersion for URL", "POST", CM,
     json.dumps({"apiVersion": "apps/v1", "kind": "ConfigMap",
                 "metadata": {"name": "s"}}).encode(), "application/json", 400, "BadRequest"),
    ("invalid name", "POST", CM,
     json.dumps({**GOOD, "metadata": {"name": "Bad_Name"}}).encode(), "application/json",
     422, "Invalid"),
    ("name too long", "POST", CM,
     json.dumps({**GOOD, "metadata": {"name": "a" * 254}}).encode(), "application/json",
     422, "Invalid"),
    ("no name", "POST", CM, json.dumps({**GOOD, "metadata": {}}).encode(), "application/json",
     422, "Invalid"),
    ("labels not strings", "POST", CM,
     json.dumps({**GOOD, "metadata": {"name": "l", "labels": {"a": 1}}}).encode(),
     "application/json", 422, "Invalid"),
    ("metadata not an object", "POST", CM, json.dumps({**GOOD, "metadata": 7}).encode(),
     "application/json", 400, "BadRequest"),
    ("namespace mismatch", "POST", CM,
     json.dumps({**GOOD, "metadata": {"name": "n", "namespace": "kube-system"}}).encode(),
     "application/json", 400, "BadRequest"),
    ("unknown media type", "POST", CM, b"name=x", "application/x-www-form-urlencoded", 415,
     "UnsupportedMediaType"),
    ("truncated protobuf", "POST", CM, b"k8s\x00\x0a\x0b", "application/vnd.kubernetes.protobuf",
     400, "BadRequest"),
    ("protobuf without the prefix", "POST", CM, b"\x0a\x00", "application/vnd.kubernetes.protobuf",
     400, "BadRequest"),
    ("missing namespace", "POST", "/api/v1/namespaces/nope/configmaps", json.dumps(GOOD).encode(),
     "application/json", 404, "NotFound"),
    ("unknown resource", "GET", "/api/v1/widgets", None, None, 404, "NotFound"),
    ("unknown group", "GET", "/apis/example.com/v1/widgets", None, None, 404, "NotFound"),
    ("bad label selector", "GET", CM + "?labelSelector=a%20in%20(", None, None, 400,
     "BadRequest"),
    ("bad resourceVersion", "GET", CM + "?resourceVersion=abc", None, None, 400, "BadRequest"),
    ("bad limit", "GET", CM + "?limit=many", None, None, 400, "BadRequest"),
    ("bad continue", "GET", CM + "?limit=1&continue=%%%", None, None, 400, "BadRequest"),
    ("future resourceVersion", "GET", CM + "/x?resourceVersion=999999999", None, None, 429,
     "TooManyRequests"),
    ("bad dryRun", "POST", CM + "?dryRun=Some", json.dumps(GOOD).encode(), "application/json",
     400, "BadRequest"),
    ("update of missing object", "PUT", CM + "/ghost", json.dumps(
        {**GOOD, "metadata": {"name": "ghost"}}).encode(), "application/json", 404, "NotFound"),
    ("JSON patch not a list", "PATCH", CM + "/ghost", b'{"op": "add"}',
     "application/json-patch+json", 404, "NotFound"),
    ("apply without fieldManager", "PATCH", CM + "/ghost", b"{}",
     "application/apply-patch+yaml", 400, "BadRequest"),
    ("apply of a list", "PATCH", CM + "/ghost?fieldManager=t", b"- 1\n- 2\n",
     "application/apply-patch+yaml", 400, "BadRequest"),
    ("apply with another name", "PATCH", CM + "/ghost?fieldManager=t",
     b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n",
     "application/apply-patch+yaml", 400, "BadRequest"),
    ("method not allowed", "POST", CM + "/x", json.dumps(GOOD).encode(), "application/json",
     405, "MethodNotAllowed"),
]


@pytest.mark.parametrize("case", CORPUS, ids=[c[0] for c in CORPUS])
async def test_bad_request_gets_right_status(client, case):
    _, method, path, raw, content_type, code, reason = case
    kwargs = {}
    if raw is not None:
        kwargs = {"raw": raw, "content_type": content_type}
    status, body = await client.request(method, path, **kwargs)
    assert status == code, body
    assert isinstance(body, dict) and body["kind"] == "Status", body
    assert body["code"] == code and body["reason"] == reason
    assert body["message"]


async def test_server_survives_the_corpus_and_stores_nothing(client):
    for _, method, path, raw, content_type, _, _ in CORPUS:
        kwargs = {"raw": raw, "content_type": content_type} if raw is not None else {}
        status, _ = await client.request(method, path, **kwargs)
        assert 400 <= status < 500
    status, body = await client.request("GET", "/api/v1/configmaps")
    assert status == 200 and body["items"] == []
    status, _ = await client.request("POST", CM, GOOD)
    assert status == 201


async def test_stale_update_loses_nothing(client):
    _, created = await client.request("POST", CM, {**GOOD, "data": {"v": "1"}})
    _, newer = await client.request("PUT", f"{CM}/ok", {**created, "data": {"v": "2"}})
    status, body = await client.request("PUT", f"{CM}/ok", {**created, "data": {"v": "3"}})
    assert status == 409 and body["reason"] == "Conflict"
    _, now = await client.request("GET", f"{CM}/ok")
    assert now == newer
