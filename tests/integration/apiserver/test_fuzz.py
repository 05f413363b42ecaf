"""Property-based hostile input (Hypothesis): generated bodies, patches of every type and
query strings go to a real API server over HTTPS, on both stores. Whatever arrives, the
answer is never a 5xx, the server stays ready, and everything it stored is strict JSON that
its kind's schema accepts, so no object can poison a LIST or an informer.

The examples Hypothesis found failing are kept in `hypothesis-db/` beside this file and
replayed first on every run; the budget is fixed (`max_examples`) so CI time stays bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading

import aiohttp
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from k8py.api import pruning, schemas
from tests.integration.inloop import running_apiserver

DATABASE = DirectoryBasedExampleDatabase(os.path.join(os.path.dirname(__file__), "hypothesis-db"))
EXAMPLES = int(os.environ.get("K8PY_FUZZ_EXAMPLES", "2500"))  # ~30 s a store

KINDS = {  # plural: (API path, apiVersion, kind, a valid object)
    "configmaps": ("/api/v1", "v1", "ConfigMap", {"data": {"a": "b"}}),
    "secrets": ("/api/v1", "v1", "Secret", {"data": {"a": "Yg=="}}),
    "pods": ("/api/v1", "v1", "Pod",
             {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    "services": ("/api/v1", "v1", "Service", {"spec": {"ports": [{"port": 80}]}}),
    "things": ("/apis/example.com/v1", "example.com/v1", "Thing", {"spec": {"a": 1}}),
}
# a custom resource that keeps whatever its spec holds: nothing typed stands in the way
THINGS = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "things.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                 "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}}
QUERY_KEYS = ["limit", "continue", "resourceVersion", "resourceVersionMatch", "timeoutSeconds",
              "gracePeriodSeconds", "propagationPolicy", "dryRun", "fieldValidation",
              "fieldManager", "force", "labelSelector", "fieldSelector", "includeObject",
              "orphanDependents", "allowWatchBookmarks"]
MEDIA = ["application/json", "application/yaml", "application/merge-patch+json",
         "application/strategic-merge-patch+json", "application/json-patch+json",
         "application/apply-patch+yaml", "application/vnd.kubernetes.protobuf", "text/plain"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12),
    st.sampled_from(["$patch", "replace", "delete", "merge", "$retainKeys", "metadata",
                     "$setElementOrder/containers", "$deleteFromPrimitiveList/finalizers",
                     "name", "fz", "add", "remove", "copy", "move", "test", "/data/a",
                     "/metadata", "", "80", "1Gi", "2024-01-01"]))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
        ["op", "path", "value", "from", "metadata", "data", "spec", "name", "labels",
         "$patch", "$retainKeys", "containers", "ports", "port", "image", "finalizers",
         "apiVersion", "kind", "stringData", "binaryData", "status", "type"])),
        inner, max_size=4)), max_leaves=12)


@st.composite
def requests(draw):
    plural = draw(st.sampled_from(sorted(KINDS)))
    prefix, api_version, kind, valid = KINDS[plural]
    method = draw(st.sampled_from(["POST", "POST", "PUT", "PATCH", "PATCH", "DELETE", "GET"]))
    path = f"{prefix}/namespaces/default/{plural}" + ("" if method == "POST" else "/fz")
    if draw(st.booleans()):  # a valid object with one part replaced by anything
        body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "fz"},
                **json.loads(json.dumps(valid))}
        section = draw(st.sampled_from(["metadata", "data", "spec", "status", "extra"]))
        target = body
        if section == "spec" and isinstance(body.get("spec"), dict) and draw(st.booleans()):
            target, section = body["spec"], draw(st.sampled_from(["a", "containers", "ports",
                                                                  "type", "selector"]))
        target[section] = draw(documents)
    else:
        body = draw(documents)
    encoding = draw(st.sampled_from(["json", "yaml", "raw"]))
    if encoding == "json":
        raw = json.dumps(body).encode("utf-8", "surrogatepass")
    elif encoding == "yaml":
        try:
            raw = yaml.safe_dump(body).encode("utf-8", "surrogatepass")
        except yaml.YAMLError:
            raw = b"{"
    else:
        raw = draw(st.binary(max_size=64))
    query = draw(st.dictionaries(st.sampled_from(QUERY_KEYS), st.one_of(
        st.text(max_size=24), st.sampled_from(["0", "1", "-1", "true", "True", "All", "Strict",
                                               "99999999999999999999", "nan", "1e3"])),
        max_size=3))
    fitting = {"POST": MEDIA[:2], "PUT": MEDIA[:2], "PATCH": MEDIA[2:6]}.get(method, MEDIA)
    media = draw(st.sampled_from(fitting if draw(st.integers(0, 4)) else MEDIA))
    return method, path, query, raw, media


class ServerThread:
    """An API server in its own thread and event loop, so Hypothesis (synchronous) can
    drive it example by example."""

    def __init__(self, tmp_path, store_url: str):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(tmp_path, store_url),
                                       daemon=True)

    def _run(self, tmp_path, store_url) -> None:
        try:
            self.loop.run_until_complete(self._serve(tmp_path, store_url))
        except BaseException as exc:  # surfaced to the test by start()
            self.error = exc
            self.ready.set()

    async def _serve(self, tmp_path, store_url) -> None:
        self.stop = asyncio.Event()
        async with running_apiserver(tmp_path, store_url) as server:
            self.server = server
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=server.ssl()))
            self.ready.set()
            await self.stop.wait()
            await self.session.close()

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(30) and self.error is None, self.error

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)

    def call(self, method, path, query=None, raw=None, media=None) -> tuple[int, bytes]:
        async def go():
            headers = {"Content-Type": media} if media else {}
            async with self.session.request(method, self.server.url + path, params=query,
                                            data=raw, headers=headers) as response:
                return response.status, await response.read()
        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(60)

    def stored(self) -> list[bytes]:
        async def go():
            page = await self.server.store.range("/registry/")
            return [kv.value for kv in page.items]
        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(60)


def _strict(raw: bytes):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(raw.decode("utf-8"), parse_constant=refuse)


@pytest.mark.parametrize("store_url", ["memory://", ""], ids=["memory", "sqlite"])
def test_hostile_requests_never_5xx_and_store_only_servable_objects(tmp_path, store_url):
    server = ServerThread(tmp_path, store_url)
    server.start()
    try:
        status, body = server.call("POST", "/apis/apiextensions.k8s.io/v1/"
                                   "customresourcedefinitions", raw=json.dumps(THINGS).encode(),
                                   media="application/json")
        assert status == 201, body
        @settings(max_examples=EXAMPLES, deadline=None, database=DATABASE,
                  suppress_health_check=list(HealthCheck))
        @given(requests())
        def check(request):
            method, path, query, raw, media = request
            status, body = server.call(method, path, query, raw if method != "GET" else None,
                                       media if method != "GET" else None)
            assert status < 500, (status, body[:500])
            collection = path.removesuffix("/fz")
            status, listing = server.call("GET", collection)
            assert status == 200, listing[:300]
            _, api_version, kind, _ = KINDS[collection.rsplit("/", 1)[1]]
            schema = schemas.for_kind("", api_version, kind)
            for item in _strict(listing)["items"]:
                pruning.prune(item, schema)  # raises on a value of the wrong type

        check()
        for value in server.stored():
            _strict(value)
        status, _ = server.call("GET", "/readyz")
        assert status == 200
    finally:
        server.close()
