"""A corpus of bad requests: each gets the right 4xx Status, never a 500 or a hang, and
afterwards the server still answers and nothing was stored."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import yarl

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
    # upstream's typed decoding refuses it before validation: "json: cannot unmarshal number
    # into Go struct field ObjectMeta.metadata.labels of type string", a 400
    ("labels not strings", "POST", CM,
     json.dumps({**GOOD, "metadata": {"name": "l", "labels": {"a": 1}}}).encode(),
     "application/json", 400, "BadRequest"),
    # --- what the hostile-input campaign found (issue 9) ---
    ("integer of 5,000 digits", "POST", CM,
     b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, "x": '
     + b"7" * 5000 + b"}", "application/json", 400, "BadRequest"),
    ("integer of 5,000 digits in YAML", "POST", CM,
     b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\nx: " + b"7" * 5000,
     "application/yaml", 400, "BadRequest"),
    ("integer outside int64", "POST", CM,
     b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, '
     b'"x": 9223372036854775808}', "application/json", 400, "BadRequest"),
    ("float out of range", "POST", CM,
     b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, "x": 1e400}',
     "application/json", 400, "BadRequest"),
    ("NaN", "POST", CM, b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"},'
     b' "x": NaN}', "application/json", 400, "BadRequest"),
    ("Infinity", "POST", CM, b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": '
     b'{"name": "n", "labels": {"a": -Infinity}}}', "application/json", 400, "BadRequest"),
    ("YAML .nan", "POST", CM, b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\n"
     b"x: .nan\n", "application/yaml", 400, "BadRequest"),
    ("lone surrogate in a create", "POST", CM,
     b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, '
     b'"data": {"a": "\\ud800"}}', "application/json", 400, "BadRequest"),
    ("lone surrogate in a key", "POST", CM,
     b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "n"}, '
     b'"data": {"\\udfff": "a"}}', "application/json", 400, "BadRequest"),
    ("lone surrogate in a merge patch", "PATCH", CM + "/ghost", b'{"data": {"a": "\\ud800"}}',
     "application/merge-patch+json", 400, "BadRequest"),
    ("YAML !!binary", "POST", CM, b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\n"
     b"data: {a: !!binary aGVsbG8=}\n", "application/yaml", 400, "BadRequest"),
    ("YAML !!set", "POST", CM, b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\n"
     b"data: !!set {a, b}\n", "application/yaml", 400, "BadRequest"),
    ("YAML complex key", "POST", CM, b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\n"
     b"data: {? [a, b] : c}\n", "application/yaml", 400, "BadRequest"),
    ("ConfigMap data not a string", "POST", CM,
     json.dumps({**GOOD, "data": {"a": 1}}).encode(), "application/json", 400, "BadRequest"),
    ("ConfigMap data not a map", "POST", CM,
     json.dumps({**GOOD, "data": ["a"]}).encode(), "application/json", 400, "BadRequest"),
    ("binaryData not base64", "POST", CM,
     json.dumps({**GOOD, "binaryData": {"a": "not base64!"}}).encode(), "application/json",
     400, "BadRequest"),
    ("ConfigMap over 1 MiB of data", "POST", CM,
     json.dumps({**GOOD, "data": {"a": "x" * (1024 * 1024), "b": "y"}}).encode(),
     "application/json", 422, "Invalid"),
    ("Secret over 1 MiB of data", "POST", "/api/v1/namespaces/default/secrets",
     json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                 "stringData": {"a": "x" * (1024 * 1024 + 1)}}).encode(),
     "application/json", 422, "Invalid"),
    ("pod port of the wrong type", "POST", "/api/v1/namespaces/default/pods",
     json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                 "spec": {"containers": [{"name": "c", "image": "i",
                                          "ports": [{"containerPort": "80"}]}]}}).encode(),
     "application/json", 400, "BadRequest"),
    ("limit too large for SQLite", "GET", CM + "?limit=99999999999999999999", None, None, 400,
     "BadRequest"),
    ("resourceVersion too large for SQLite", "GET", CM + "?resourceVersion=99999999999999999999",
     None, None, 400, "BadRequest"),
    ("timeoutSeconds not a number", "GET", CM + "?watch=true&timeoutSeconds=nan", None, None,
     400, "BadRequest"),
    ("watch not a boolean", "GET", CM + "?watch=maybe", None, None, 400, "BadRequest"),
    ("gracePeriodSeconds not a number", "DELETE", CM + "/ghost?gracePeriodSeconds=1e3", None,
     None, 400, "BadRequest"),
    ("gracePeriodSeconds of the wrong type in DeleteOptions", "DELETE", CM + "/ghost",
     b'{"gracePeriodSeconds": "soon"}', "application/json", 400, "BadRequest"),
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
    # upstream's watch cache: 3 s for the store to get there, then "Too large resource version"
    ("future resourceVersion", "GET", CM + "/x?resourceVersion=999999999", None, None, 504,
     "Timeout"),
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
    # --- what the hostile-input campaign found (tests/integration/test_hostile_input.py) ---
    ("JSON after a byte order mark", "POST", CM, b"\xef\xbb\xbf" + json.dumps(GOOD).encode(),
     "application/json", 400, "BadRequest"),
    ("JSON in UTF-16", "POST", CM, json.dumps(GOOD).encode("utf-16"), "application/json", 400,
     "BadRequest"),
    ("JSON in UTF-32", "POST", CM, json.dumps(GOOD).encode("utf-32"), "application/json", 400,
     "BadRequest"),
    ("merge patch in UTF-16", "PATCH", CM + "/ghost", b'{"data": {}}'.decode().encode("utf-16"),
     "application/merge-patch+json", 400, "BadRequest"),
    ("name with a percent sign", "GET", CM + "/a%25b", None, None, 400, "BadRequest"),
    ("protobuf time past the year 9999", "POST", CM,
     b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x10\x0a\x0e\x0a\x01t"
     b"\x42\x09\x08\x80\x80\x80\x80\x80\x80\x80\x80\x40",
     "application/vnd.kubernetes.protobuf", 400, "BadRequest"),
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
    for _, method, path, raw, content_type, code, _ in CORPUS:
        kwargs = {"raw": raw, "content_type": content_type} if raw is not None else {}
        status, _ = await client.request(method, path, **kwargs)
        # a client's error; or upstream's own 504 for a version the store has not reached
        assert 400 <= status < 500 or status == code == 504, (path, status)
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


async def test_configmap_data_error_names_the_field_as_upstream(client):
    status, body = await client.request("POST", CM, {**GOOD, "data": {"a": 1}})
    assert status == 400
    assert body["message"] == ('ConfigMap in version "v1" cannot be handled as a ConfigMap: '
                               "json: cannot unmarshal number into Go struct field "
                               "ConfigMap.data of type string")


async def test_configmap_over_1mib_message_as_upstream(client):
    status, body = await client.request(
        "POST", CM, {**GOOD, "data": {"a": "x" * (512 * 1024), "b": "y" * (512 * 1024 + 1)}})
    assert status == 422
    assert body["message"] == 'ConfigMap "ok" is invalid: []: Too long: must have at most ' \
                              '1048576 bytes'
    assert body["details"]["causes"][0]["reason"] == "FieldValueTooLong"
    status, _ = await client.request("POST", CM, {**GOOD, "data": {"a": "x" * (1024 * 1024)}})
    assert status == 201  # exactly 1 MiB is allowed


async def test_yaml_dates_stay_strings(client):
    # Go's YAML decoder keeps timestamp-like values as the text written; so does k8py
    raw = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dated}\n" \
          b"data: {day: 2024-01-01, at: 2024-01-01T10:00:00Z, port: 8080}\n"
    status, body = await client.request("POST", CM, raw=raw, content_type="application/yaml")
    assert status == 400  # port: 8080 is a number, and data holds strings
    raw = raw.replace(b"port: 8080", b"8080: port")
    status, body = await client.request("POST", CM, raw=raw, content_type="application/yaml")
    assert status == 201, body
    assert body["data"] == {"day": "2024-01-01", "at": "2024-01-01T10:00:00Z", "8080": "port"}


@pytest.mark.parametrize("directive", [
    {"$retainKeys": 5}, {"$retainKeys": [1]}, {"$setElementOrder/containers": 5},
    {"$deleteFromPrimitiveList/finalizers": "x"},
])
async def test_malformed_strategic_directive_is_400(client, directive):
    await client.request("POST", CM, GOOD)
    status, body = await client.request(
        "PATCH", f"{CM}/ok", raw=json.dumps({"metadata": directive}).encode(),
        content_type="application/strategic-merge-patch+json")
    assert status == 400 and body["reason"] == "BadRequest", body
    _, now = await client.request("GET", f"{CM}/ok")
    assert now["metadata"]["resourceVersion"]  # still there, unchanged


async def test_json_patch_copy_bomb_is_refused(client):
    await client.request("POST", CM, {**GOOD, "data": {"a": "x" * 100_000}})
    bomb = [{"op": "copy", "from": "/data", "path": "/metadata/annotations"}] + [
        {"op": "copy", "from": "/data/a", "path": f"/data/a{i}"} for i in range(40)]
    status, body = await client.request("PATCH", f"{CM}/ok", raw=json.dumps(bomb).encode(),
                                        content_type="application/json-patch+json")
    assert status == 413 and body["reason"] == "RequestEntityTooLarge", body


async def test_nan_is_never_stored_and_the_collection_stays_listable(client):
    await client.request("POST", CM, GOOD)
    for body in (b'{"data": {"a": NaN}}', b'{"metadata": {"labels": {"a": Infinity}}}'):
        status, _ = await client.request("PATCH", f"{CM}/ok", raw=body,
                                         content_type="application/merge-patch+json")
        assert status == 400
    status, listed = await client.request("GET", CM)
    assert status == 200 and [i["metadata"]["name"] for i in listed["items"]] == ["ok"]


async def test_server_side_apply_of_a_list_map_element_without_its_key_is_400(client):
    await client.request("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}})
    config = (b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
              b"  - name: c\n    image: i\n    ports: [{protocol: TCP}]\n")
    status, body = await client.request("PATCH", "/api/v1/namespaces/default/pods/p",
                                        raw=config, content_type="application/apply-patch+yaml",
                                        fieldManager="t")
    assert status == 400 and body["reason"] == "BadRequest", body
    assert body["message"].startswith("failed to create typed patch object (/v1, Kind=Pod): ")
    assert "containerPort" in body["message"]


async def _raw_path(client, method: str, path: str):
    """A request whose path goes out exactly as written: no client resolves its dot segments."""
    url = yarl.URL(client.server.url + path, encoded=True)
    async with client.session.request(method, url) as response:
        return response.status, json.loads(await response.read())


async def test_dot_segments_are_never_resolved(client):
    """aiohttp resolves `..` before routing: `DELETE secrets/x/..` was a delete of every
    Secret, `DELETE namespaces/n/secrets/..` of the namespace. Upstream resolves nothing."""
    await client.request("POST", "/api/v1/namespaces", {"metadata": {"name": "n"}})
    await client.request("POST", "/api/v1/namespaces/n/secrets", {"metadata": {"name": "s"}})
    for path in ("/api/v1/namespaces/n/secrets/s/..", "/api/v1/namespaces/n/secrets/s/%2e%2e",
                 "/api/v1/namespaces/n/secrets/x/../s", "/api/v1/namespaces/n/secrets/..",
                 "/api/v1/namespaces/n/secrets/%2E%2E", "/api/v1/namespaces/n/secrets/."):
        status, body = await _raw_path(client, "DELETE", path)
        assert body["kind"] == "Status" and status in (400, 404), (path, body)
        if path.endswith(("..", "%2E%2E")):
            assert status == 400 and body["message"] == \
                'Name parameter invalid: "..": may not be \'..\'', body
    status, _ = await client.request("GET", "/api/v1/namespaces/n/secrets/s")
    assert status == 200
    status, body = await client.request("GET", "/api/v1/namespaces/n")
    assert status == 200 and "deletionTimestamp" not in body["metadata"]


async def test_an_unparsable_request_is_not_an_error_in_the_log(client, caplog):
    caplog.set_level(logging.DEBUG)
    host, port = client.server.url.removeprefix("https://").rsplit(":", 1)
    for request in (b"GET /api/v1/" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /api/v1/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"):
        reader, writer = await asyncio.open_connection(host, int(port),
                                                       ssl=client.server.ssl())
        writer.write(request)
        answer = await reader.read()
        writer.close()
        assert answer.split(b" ", 2)[1] == b"400", answer[:200]
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]
    # a long URL within the limit is served (as Go serves up to 1 MiB of headers)
    status, body = await client.request("GET", CM, labelSelector="a in (" + "b," * 5000 + "c)")
    assert status == 200 and body["items"] == []


async def test_null_in_a_resource_list_is_the_zero_quantity(client):
    """Was a 500 (the QoS class read None): Go decodes null there as the zero Quantity."""
    status, body = await client.request("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": "q"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": {"limits": {"cpu": None}}}]}})
    assert status == 201, body
    assert body["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "0"}
    assert body["status"]["qosClass"] == "BestEffort"
