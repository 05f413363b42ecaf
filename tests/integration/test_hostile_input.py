"""The hostile-input campaign: a real API server over TLS (SQLite store) given fuzzed JSON,
YAML and protobuf bodies, oversized and deeply nested documents, YAML alias bombs, path
traversal in every verb, slow-loris connections, 5,000 open watches and one user's flood.

Every part ends the same way (`Campaign.finish`): no 5xx and no 4xx without a `Status` over
the whole part, the server still answering (`/readyz`, a list), no error or traceback in its
log, and nothing stored that should not be. Mutations come from one seeded generator; the
seed is printed (`K8PY_HOSTILE_SEED` replays one). Timings are printed, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import subprocess
import sys
import time

import aiohttp
import pytest

from k8py.server.apiserver import app as apiserver
from tests.conftest import eventually, stop_process
from tests.integration.hostile import mutations
from tests.integration.hostile.campaign import Campaign
from tests.integration.inloop import free_port, running_apiserver

SEED = int(os.environ.get("K8PY_HOSTILE_SEED", random.SystemRandom().randrange(2 ** 32)))
CM = "/api/v1/namespaces/default/configmaps"
PODS = "/api/v1/namespaces/default/pods"
PROTOBUF = "application/vnd.kubernetes.protobuf"
COLLECTIONS = {"ConfigMap": CM, "Pod": PODS}


@pytest.fixture
def rng() -> random.Random:
    print(f"hostile-input seed: {SEED} (K8PY_HOSTILE_SEED={SEED} replays it)")
    return random.Random(SEED)


@pytest.fixture
def log_records(caplog) -> list[logging.LogRecord]:
    caplog.set_level(logging.WARNING)
    return caplog.records


@pytest.fixture
async def campaign(tmp_path):
    async with running_apiserver(tmp_path, "") as server:
        connector = aiohttp.TCPConnector(ssl=server.ssl(), limit=50)
        async with aiohttp.ClientSession(connector=connector) as session:
            yield await Campaign(server, session).begin()


def fuzz_objects(key: str, obj: dict) -> bool:
    """What a fuzzed create may leave: a ConfigMap or Pod of the default namespace."""
    return key.startswith(("/registry/core/configmaps/default/", "/registry/core/pods/default/"))


async def _create_and_clean(campaign: Campaign, path: str, body: bytes, content_type: str,
                            label: str) -> None:
    answer = await campaign.send("POST", path, body, content_type, label)
    if answer.status == 201:  # a mutation that is still a valid object: fine, and removed
        name = json.loads(answer.body)["metadata"]["name"]
        await campaign.send("DELETE", f"{path}/{name}?gracePeriodSeconds=0", label="cleanup")


async def test_fuzzed_json_bodies(campaign, rng, log_records):
    for kind, document in (("ConfigMap", mutations.CONFIGMAP), ("Pod", mutations.POD)):
        path = COLLECTIONS[kind]
        for label, body in mutations.json_bodies(document, rng, 150):
            await _create_and_clean(campaign, path, body, "application/json", label)
        # the same bodies as updates and merge patches of an object that exists
        created = await campaign.send("POST", path, json.dumps(document).encode())
        assert created.status == 201, created
        for label, body in mutations.json_bodies(document, rng, 40):
            await campaign.send("PUT", f"{path}/fz", body, "application/json", label)
            await campaign.send("PATCH", f"{path}/fz", body, "application/merge-patch+json",
                                label)
            await campaign.send("PATCH", f"{path}/fz", body,
                                "application/strategic-merge-patch+json", label)
    print(campaign.report("fuzzed JSON"))
    await campaign.finish(log_records, fuzz_objects)


async def test_fuzzed_yaml_bodies(campaign, rng, log_records):
    for kind, document in (("ConfigMap", mutations.CONFIGMAP), ("Pod", mutations.POD)):
        path = COLLECTIONS[kind]
        for label, body in mutations.yaml_bodies(document, rng, 150):
            await _create_and_clean(campaign, path, body, "application/yaml", label)
            await campaign.send("PATCH", f"{path}/fz?fieldManager=fuzz", body,
                                "application/apply-patch+yaml", label)
    print(campaign.report("fuzzed YAML"))
    await campaign.finish(log_records, fuzz_objects)


async def test_fuzzed_protobuf_bodies(campaign, rng, log_records):
    for label, kind, body in mutations.protobuf_bodies(rng, 100):
        await _create_and_clean(campaign, COLLECTIONS[kind], body, PROTOBUF, label)
    print(campaign.report("fuzzed protobuf"))
    await campaign.finish(log_records, fuzz_objects)


async def test_oversized_bodies_are_413(campaign, log_records):
    big = "x" * (3 * 1024 * 1024)
    document = {**mutations.CONFIGMAP, "data": {"big": big}}
    bodies = [("JSON", "POST", CM, json.dumps(document).encode(), "application/json"),
              ("YAML", "POST", CM, json.dumps(document).encode(), "application/yaml"),
              ("protobuf", "POST", CM, mutations.envelope("v1", "ConfigMap", mutations.field(
                  2, mutations.field(1, b"big") + mutations.field(2, big.encode()))), PROTOBUF),
              ("merge patch", "PATCH", CM + "/fz", json.dumps({"data": {"big": big}}).encode(),
               "application/merge-patch+json"),
              ("update", "PUT", CM + "/fz", json.dumps(document).encode(), "application/json")]
    for label, method, path, body, content_type in bodies:
        answer = await campaign.send(method, path, body, content_type, label)
        assert answer.status == 413 and answer.status_object()["reason"] == \
            "RequestEntityTooLarge", (label, answer)

        async def chunks(data: bytes = body):  # no Content-Length: the size shows on reading
            for start in range(0, len(data), 256 * 1024):
                yield data[start:start + 256 * 1024]
        answer = await campaign.send(method, path, chunks(), content_type, label + " chunked")
        assert answer.status == 413, (label, answer)
    print(campaign.report("oversized bodies"))
    await campaign.finish(log_records)


def _nested_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


NESTED = [("100k [", b"[" * 100_000, "application/json"),
          ("100k [ closed", b"[" * 100_000 + b"]" * 100_000, "application/json"),
          ("100k objects", _nested_json(100_000), "application/json"),
          ("just over the limit", _nested_json(201), "application/json"),
          ("YAML 100k [", b"[" * 100_000, "application/yaml"),
          ("YAML 100k {a:", b"{a: " * 100_000, "application/yaml"),
          ("YAML block nesting", b"".join(b" " * i + b"a:\n" for i in range(1500)) +
           b" " * 1500 + b"b", "application/yaml"),
          ("YAML 100k - ", b"- " * 100_000 + b"x", "application/yaml")]
PATCH_TYPES = ["application/merge-patch+json", "application/strategic-merge-patch+json",
               "application/json-patch+json", "application/apply-patch+yaml"]


async def test_deeply_nested_documents_are_400(campaign, log_records):
    created = await campaign.send("POST", CM, json.dumps(mutations.CONFIGMAP).encode())
    assert created.status == 201
    for label, body, content_type in NESTED:
        answer = await campaign.send("POST", CM, body, content_type, label)
        assert answer.status == 400, (label, answer)
        answer = await campaign.send("PUT", CM + "/fz", body, content_type, label)
        assert answer.status == 400, (label, answer)
        for patch_type in PATCH_TYPES:
            answer = await campaign.send("PATCH", CM + "/fz?fieldManager=t", body, patch_type,
                                         label)
            assert answer.status in (400, 415), (label, patch_type, answer)
    print(campaign.report("deep nesting"))
    await campaign.finish(log_records, lambda key, obj: key.endswith("/configmaps/default/fz"))


def _billion_laughs(levels: int = 9, width: int = 10) -> bytes:
    lines = [b'lol0: &lol0 "lol"']
    for i in range(1, levels + 1):
        refs = b", ".join(b"*lol%d" % (i - 1) for _ in range(width))
        lines.append(b"lol%d: &lol%d [%s]" % (i, i, refs))
    lines += [b"apiVersion: v1", b"kind: ConfigMap", b"metadata: {name: bomb}",
              b"data: {a: *lol%d}" % levels]
    return b"\n".join(lines)


async def test_yaml_alias_bombs_are_400_at_once(campaign, log_records):
    created = await campaign.send("POST", CM, json.dumps(mutations.CONFIGMAP).encode())
    assert created.status == 201
    for label, body in (("billion laughs", _billion_laughs()),
                        ("wide", _billion_laughs(levels=3, width=2000)),
                        ("merge key bomb", b"a: &a {x: 1}\nb: {<<: [*a, *a, *a]}\n"),
                        ("recursive alias", b"a: &a [*a]\n")):
        for method, path, content_type in (("POST", CM, "application/yaml"),
                                           ("PUT", CM + "/fz", "application/yaml"),
                                           ("PATCH", CM + "/fz?fieldManager=t",
                                            "application/apply-patch+yaml")):
            start = time.monotonic()
            answer = await campaign.send(method, path, body, content_type, label)
            print(f"{label} ({method}): {answer.status} in {time.monotonic() - start:.3f} s")
            assert answer.status == 400, (label, answer)
            assert "alias" in answer.status_object()["message"], answer
    await campaign.finish(log_records, lambda key, obj: key.endswith("/configmaps/default/fz"))


# (not `%2F` alone: `configmaps//` is the collection, for upstream too, which trims slashes)
TRAVERSAL_NAMES = ["..", ".", "%2e%2e", "%2E%2E", "..%2F..%2Fsecrets", "a%2Fb", "a%2F", "a/b",
                   "a%00b", "%00", "a%25b", "%25", "..%5C..", "a%20b", "%C0%AE%C0%AE",
                   "x" * 5000, "a" * 253 + "b", "%ff", "~root", "a;b", "a?b=c"]
SUBRESOURCES = ["", "/status", "/..", "/%2e%2e", "/status/..", "/..%2Fexec", "/exec%2F..",
                "/log/../../secrets", "/binding/..", "/%00"]


async def test_path_traversal_in_every_verb(campaign, log_records):
    # something a traversal could reach: a Secret beside the ConfigMap
    await campaign.send("POST", "/api/v1/namespaces/default/secrets", json.dumps(
        {"metadata": {"name": "target"}, "stringData": {"k": "v"}}).encode())
    await campaign.send("POST", CM, json.dumps(mutations.CONFIGMAP).encode())
    before = await campaign.server.store.range("/registry/")
    campaign.start_revision = before.revision
    bodies = {"PUT": (json.dumps(mutations.CONFIGMAP).encode(), "application/json"),
              "PATCH": (b'{"data": {"p": "wned"}}', "application/merge-patch+json"),
              "POST": (json.dumps(mutations.CONFIGMAP).encode(), "application/json")}
    for prefix in (CM, PODS, "/api/v1/namespaces", "/api/v1/namespaces/default/secrets",
                   "/apis/apps/v1/namespaces/default/deployments"):
        for name in TRAVERSAL_NAMES:
            for sub in SUBRESOURCES:
                path = f"{prefix}/{name}{sub}"
                for method in ("GET", "DELETE", "PUT", "PATCH", "POST"):
                    body, content_type = bodies.get(method, (None, None))
                    await campaign.send(method, path, body, content_type)
        for name in TRAVERSAL_NAMES[:8]:  # in the namespace segment too
            path = f"/api/v1/namespaces/{name}/configmaps/fz"
            for method in ("GET", "DELETE", "PUT", "PATCH"):
                body, content_type = bodies.get(method, (None, None))
                await campaign.send(method, path, body, content_type)
    # in the body's name, and as raw bytes no client would send
    for name in ["..", ".", "a/b", "../secrets", "a\u0000b", "a%b", "x" * 5000]:
        for kind_path, kind in ((CM, "ConfigMap"),
                                ("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
                                 "Role")):
            answer = await campaign.send("POST", kind_path, json.dumps(
                {"kind": kind, "metadata": {"name": name}}).encode(), label=f"name {name[:9]!r}")
            assert answer.status in (400, 422), (name, answer)
    for raw_path in [b"/api/v1/namespaces/default/configmaps/a\x00b",
                     b"/api/v1/namespaces/default/configmaps/../../../../etc/passwd",
                     b"/api/v1/namespaces/default/configmaps/..\\..\\secrets",
                     b"/api/v1/namespaces/default/configmaps/\xff\xfe",
                     b"/api/v1/namespaces/default/configmaps/" + b"x" * 20_000]:
        await campaign.raw(b"GET " + raw_path + b" HTTP/1.1\r\nHost: x\r\n"
                           b"Connection: close\r\n\r\n", f"raw GET {raw_path[:60]!r}")
    # nothing reached the Secret or changed the ConfigMap
    for path in ("/api/v1/namespaces/default/secrets/target", CM + "/fz"):
        answer = await campaign.send("GET", path)
        assert answer.status == 200 and "wned" not in answer.body.decode()
    print(campaign.report("path traversal"))
    await campaign.finish(log_records)


async def test_slow_loris_connections_do_not_stop_others(tmp_path, monkeypatch, log_records):
    monkeypatch.setattr(apiserver, "REQUEST_HEADER_TIMEOUT", 3.0)
    async with running_apiserver(tmp_path, "") as server:
        host, port = server.url.removeprefix("https://").rsplit(":", 1)
        request = b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n" \
                  b"X-Slow: " + b"a" * 5000 + b"\r\n\r\n"
        closed: list[float] = []
        start = time.monotonic()

        async def drip() -> None:
            reader, writer = await asyncio.open_connection(host, int(port), ssl=server.ssl())
            try:
                for byte in request:  # one byte at a time, for as long as the server listens
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    if reader.at_eof() or writer.is_closing():
                        break
                    if reader._buffer or reader.exception():  # an answer or a reset
                        break
                else:
                    raise AssertionError("the server read a whole request sent over 4 minutes")
            except (ConnectionError, OSError, ssl.SSLError):
                pass
            finally:
                closed.append(time.monotonic() - start)
                writer.transport.abort()

        drips = [asyncio.create_task(drip()) for _ in range(200)]
        connector = aiohttp.TCPConnector(ssl=server.ssl())
        async with aiohttp.ClientSession(connector=connector) as session:
            campaign = await Campaign(server, session).begin()
            latencies = []
            while len(closed) < len(drips):
                begun = time.monotonic()
                answer = await campaign.send("GET", CM, label="during the slow loris")
                latencies.append(time.monotonic() - begun)
                assert answer.status == 200
                if time.monotonic() - start > 60:
                    break
            await asyncio.wait_for(asyncio.gather(*drips), 30)
            print(f"200 slow connections cut after {min(closed):.1f}-{max(closed):.1f} s; "
                  f"{len(latencies)} requests meanwhile, slowest {max(latencies):.3f} s")
            await campaign.finish(log_records)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


WATCH_USERS = 5  # the per-user cap (watchserving.MAX_WATCHES_PER_USER, 2048) is respected
WATCHES_PER_USER = 1000


async def _let_group_watch_configmaps(session, url: str, admin: dict, group: str) -> None:
    """RBAC: `group` may list and watch ConfigMaps; wait until the server says so."""
    rbac = url + "/apis/rbac.authorization.k8s.io/v1"
    async with session.post(rbac + "/clusterroles", headers=admin, json={
            "metadata": {"name": "configmap-watcher"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                       "verbs": ["list", "watch"]}]}) as r:
        assert r.status == 201, await r.text()
    async with session.post(rbac + "/clusterrolebindings", headers=admin, json={
            "metadata": {"name": "configmap-watchers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "configmap-watcher"},
            "subjects": [{"kind": "Group", "name": group}]}) as r:
        assert r.status == 201, await r.text()

    async def allowed() -> bool:
        async with session.post(
                url + "/apis/authorization.k8s.io/v1/subjectaccessreviews", headers=admin,
                json={"spec": {"groups": [group], "resourceAttributes": {
                    "verb": "watch", "resource": "configmaps", "namespace": "default"}}}) as r:
            return (await r.json())["status"]["allowed"]

    await eventually(allowed, timeout=10, what="the binding to take effect")


async def test_5000_open_watches(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    cred = data / "server" / "cred"
    cred.mkdir(parents=True, mode=0o700)
    tokens = {f"watcher{i}": f"token-watcher-{i}-{SEED}" for i in range(WATCH_USERS)}
    fd = os.open(cred / "tokens", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'admin-{SEED},system:admin,system:admin,"system:masters"\n')
        f.writelines(f'{token},{user},{user},"watchers"\n' for user, token in tokens.items())
    kubeconfig = tmp_path / "kubeconfig.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8py", "server", "--disable-agent", "--disable-scheduler",
         "--disable-controller-manager", "--data-dir", str(data), "--bind-address",
         "127.0.0.1", "--https-listen-port", str(port), "--write-kubeconfig", str(kubeconfig)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await eventually(lambda: kubeconfig.exists() or proc.poll() is not None, timeout=30,
                         what="the server to start")
        assert proc.poll() is None
        tls = data / "server" / "tls"
        context = ssl.create_default_context(cafile=str(tls / "server-ca.crt"))
        url = f"https://127.0.0.1:{port}"
        admin = {"Authorization": f"Bearer admin-{SEED}"}
        connector = aiohttp.TCPConnector(ssl=context, limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await _let_group_watch_configmaps(session, url, admin, "watchers")
            async with session.get(url + CM, headers=admin) as r:
                revision = (await r.json())["metadata"]["resourceVersion"]
            fds_before = len(os.listdir(f"/proc/{proc.pid}/fd"))
            rss_before = _rss_mb(proc.pid)
            opened = asyncio.Semaphore(200)  # handshakes in flight at once
            streams: list[aiohttp.ClientResponse] = []

            async def watch(user: str) -> None:
                async with opened:
                    response = await session.get(
                        url + CM, params={"watch": "true", "resourceVersion": revision},
                        headers={"Authorization": f"Bearer {tokens[user]}"})
                assert response.status == 200, await response.text()
                streams.append(response)

            start = time.monotonic()
            await asyncio.gather(*(watch(user) for user in tokens
                                   for _ in range(WATCHES_PER_USER)))
            opening = time.monotonic() - start
            rss_during = _rss_mb(proc.pid)
            # every watch is live: one change reaches all of them
            async with session.post(url + CM, headers=admin, json={
                    "metadata": {"name": "seen-by-all"}}) as r:
                assert r.status == 201
            start = time.monotonic()

            async def first_event(response: aiohttp.ClientResponse) -> str:
                line = await asyncio.wait_for(response.content.readline(), 60)
                return json.loads(line)["object"]["metadata"]["name"]
            names = await asyncio.gather(*(first_event(s) for s in streams))
            fan_out = time.monotonic() - start
            assert set(names) == {"seen-by-all"} and len(names) == 5000
            # the server keeps answering others meanwhile
            begun = time.monotonic()
            async with session.get(url + "/readyz") as r:
                assert r.status == 200
            async with session.get(url + CM, headers=admin) as r:
                assert r.status == 200
            answering = time.monotonic() - begun
            for response in streams:
                response.close()
        # every watch's connection closes on the server's side too
        await eventually(lambda: len(os.listdir(f"/proc/{proc.pid}/fd")) <= fds_before + 5,
                         timeout=30, what="the watches' connections to close")
        # and their memory goes back to the system (watchserving trims as watches end)
        rss_after = await eventually(lambda: (rss := _rss_mb(proc.pid)) < rss_during and rss,
                                     timeout=30, what="the watches' memory to be freed")
        print(f"5000 watches: opened in {opening:.1f} s, one event to all in {fan_out:.1f} s, "
              f"a list meanwhile in {answering:.3f} s; server RSS {rss_before:.0f} MB before, "
              f"{rss_during:.0f} MB with 5000 watches, {rss_after:.0f} MB after")
        assert rss_during - rss_before < 400, (rss_before, rss_during)  # under 80 kB a watch
    finally:
        stop_process(proc)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    assert "Traceback" not in stderr and " ERROR " not in stderr, stderr[-3000:]


async def test_one_users_flood_leaves_another_users_latency(tmp_path, log_records):
    async with running_apiserver(tmp_path, "", users=("mallory", "alice"),
                                 max_requests_inflight=4) as server:
        pool = server.app[apiserver.FLOW_CONTROL_KEY].pools[False]
        connector = aiohttp.TCPConnector(ssl=server.ssl())
        async with aiohttp.ClientSession(connector=connector) as admin:
            for i in range(200):  # a collection whose list takes its time: 2 MB
                async with admin.post(server.url + CM, json={
                        "metadata": {"name": f"cm{i:03}"}, "data": {"v": "x" * 10_000}}) as r:
                    assert r.status == 201

        def session(user: str) -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=server.ssl(client_cert=False), limit=0),
                headers={"Authorization": f"Bearer {server.user_tokens[user]}"})

        async with session("mallory") as mallory, session("alice") as alice:
            campaign = await Campaign(server, alice).begin()
            stop = asyncio.Event()
            flood_codes: dict[int, int] = {}

            async def flood() -> None:
                while not stop.is_set():
                    async with mallory.get(server.url + CM) as r:
                        await r.read()
                        flood_codes[r.status] = flood_codes.get(r.status, 0) + 1

            flooders = [asyncio.create_task(flood()) for _ in range(120)]
            await eventually(lambda: pool.queued >= 40, timeout=30, what="mallory's queue")
            latencies = []
            for i in range(30):
                begun = time.monotonic()
                answer = await campaign.send("GET", CM + "?limit=10", label="alice's read")
                latencies.append(time.monotonic() - begun)
                assert answer.status == 200, answer
            stop.set()
            await asyncio.gather(*flooders)
            latencies.sort()
            print(f"mallory's flood: {flood_codes}; alice's reads meanwhile (s): median "
                  f"{latencies[len(latencies) // 2]:.3f}, max {latencies[-1]:.3f}; waited in "
                  f"queue: mallory {pool.waited['mallory']}, alice {pool.waited['alice']}")
            assert pool.rejected["alice"] == 0
            assert flood_codes.get(429, 0) + pool.waited["mallory"] > 0
            assert set(flood_codes) <= {200, 429}
            await campaign.finish(log_records)
