"""The audit log of a real API server, driven by the real kubectl 1.32 and the official
Python client: a create/get/list/watch/delete flow gives the events the policy's levels
say; secrets at Metadata carry no data; a 401 is audited; every answer has an Audit-ID;
the log rotates at --audit-log-maxsize and keeps --audit-log-maxbackup backups; a real
full disk costs events, not the server; `k8py server` refuses a malformed policy and writes
events to standard output with `--audit-log-path -`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import aiohttp
import pytest
from kubernetes import client as kclient, config as kconfig, watch as kwatch

from k8py.server import pki
from k8py.server.apiserver import audit
from k8py.server.apiserver.app import AUDITOR_KEY
from tests.conftest import eventually, small_tmpfs, stop_process, wait_for
from tests.e2e.conftest import find_kubectl
from tests.integration.inloop import free_port, running_apiserver

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/api*", "/openapi*", /version]
- level: Metadata
  resources: [{group: "", resources: [secrets, configmaps/status]}]
- level: RequestResponse
  resources: [{group: "", resources: [configmaps]}]
- level: Request
  verbs: [create]
  resources: [{group: "", resources: [serviceaccounts]}]
- level: Metadata
"""


class Audited:
    def __init__(self, server, log_path, tmp_path):
        self.server = server
        self.log_path = log_path
        self.kubeconfig = str(tmp_path / "kubeconfig.yaml")
        self.home = str(tmp_path / "home")
        pki.write_kubeconfig(server.certs, self.kubeconfig, server.url, 0o600)
        self.auditor = server.app[AUDITOR_KEY]

    def events(self) -> list[dict]:
        assert self.auditor.sink.flush()
        with open(self.log_path) as f:
            return [json.loads(line) for line in f]

    async def kubectl(self, *args: str) -> str:
        env = {**os.environ, "HOME": self.home, "KUBECONFIG": self.kubeconfig}
        proc = await asyncio.to_thread(
            subprocess.run, [find_kubectl(), "--cache-dir", self.home + "/cache", *args],
            capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


@pytest.fixture
async def audited(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    log_path = str(tmp_path / "logs" / "audit.log")
    auditor = audit.from_flags(str(policy), log_path)
    async with running_apiserver(tmp_path, auditor=auditor) as server:
        yield Audited(server, log_path, tmp_path)


def of(events, verb, resource, name=None):
    return [e for e in events if e["verb"] == verb and e.get("objectRef", {}).get(
        "resource") == resource and (name is None or e["objectRef"].get("name") == name)]


async def test_kubectl_flow_at_the_policys_levels(audited):
    await audited.kubectl("create", "configmap", "flow", "--from-literal=k=v")
    await audited.kubectl("get", "configmap", "flow", "-o", "json")
    await audited.kubectl("get", "configmaps", "-o", "json")
    api = kconfig.new_client_from_config(config_file=audited.kubeconfig)
    core = kclient.CoreV1Api(api)
    seen = await asyncio.to_thread(lambda: [e["object"].metadata.name for e in kwatch.Watch(
    ).stream(core.list_namespaced_config_map, "default", timeout_seconds=1)])
    assert "flow" in seen
    await audited.kubectl("delete", "configmap", "flow")
    events = audited.events()
    assert not [e for e in events if e["stage"] == "RequestReceived"]  # omitted
    assert not [e for e in events if e["requestURI"].startswith(("/api?", "/apis?"))]

    create, = of(events, "create", "configmaps")
    assert create["level"] == "RequestResponse" and create["stage"] == "ResponseComplete"
    assert create["objectRef"] == {"resource": "configmaps", "namespace": "default",
                                   "name": "flow", "apiVersion": "v1"}
    assert create["responseStatus"] == {"metadata": {}, "code": 201}
    assert create["requestObject"]["data"] == {"k": "v"}
    assert create["responseObject"]["metadata"]["uid"]
    assert create["userAgent"].startswith("kubectl")
    assert create["user"]["username"] == "system:admin"
    assert "system:masters" in create["user"]["groups"]

    get, gone = of(events, "get", "configmaps", "flow")  # kubectl delete waits with a get
    assert gone["responseStatus"]["code"] == 404 and gone["responseStatus"]["reason"] == \
        "NotFound" and gone["responseObject"]["kind"] == "Status"
    assert get["responseObject"]["data"] == {"k": "v"} and "requestObject" not in get
    lists = of(events, "list", "configmaps")
    assert lists and all(e["responseObject"]["kind"] == "ConfigMapList" for e in lists)
    assert any(i["metadata"]["name"] == "flow" for e in lists
               for i in e["responseObject"]["items"])

    started, complete = of(events, "watch", "configmaps")
    assert (started["stage"], complete["stage"]) == ("ResponseStarted", "ResponseComplete")
    assert started["auditID"] == complete["auditID"]
    assert started["responseStatus"] == {"metadata": {}, "code": 200}
    assert started["requestURI"] == \
        "/api/v1/namespaces/default/configmaps?timeoutSeconds=1&watch=true"
    assert started["userAgent"].startswith("OpenAPI-Generator")  # the Python client

    delete, = of(events, "delete", "configmaps", "flow")
    assert delete["responseStatus"]["code"] == 200
    assert delete["requestObject"] == {"propagationPolicy": "Background"}


async def test_secrets_at_metadata_carry_no_data(audited):
    await audited.kubectl("create", "secret", "generic", "s1",
                          "--from-literal=password=hunter2-sekret")
    out = await audited.kubectl("get", "secret", "s1", "-o", "json")
    assert json.loads(out)["data"]["password"]
    events = audited.events()
    create, = of(events, "create", "secrets")
    get, = of(events, "get", "secrets", "s1")
    for event in (create, get):
        assert event["level"] == "Metadata"
        assert "requestObject" not in event and "responseObject" not in event
    assert create["objectRef"]["name"] == "s1"  # from the body, as upstream
    with open(audited.log_path) as f:
        text = f.read()
    assert "hunter2" not in text and "aHVudGVyMi1zZWtyZXQ" not in text  # nor base64


async def test_audit_id_on_every_answer_and_a_401_audited(audited):
    server = audited.server
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.ssl())) as s:
        async with s.get(server.url + "/api/v1/namespaces/default/pods/none") as r:
            assert r.status == 404
            missing_id = r.headers["Audit-ID"]
        async with s.get(server.url + "/version") as r:  # not audited (level None)
            assert re.fullmatch(r"[0-9a-f-]{36}", r.headers["Audit-ID"])
        async with s.get(server.url + "/healthz", headers={"Audit-ID": "chosen"}) as r:
            assert r.headers["Audit-ID"] == "chosen"
    anonymous = aiohttp.TCPConnector(ssl=server.ssl(client_cert=False))
    async with aiohttp.ClientSession(connector=anonymous) as s:
        async with s.get(server.url + "/api/v1/namespaces/default/pods",
                         headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401
            refused_id = r.headers["Audit-ID"]
    events = audited.events()
    missing, = [e for e in events if e["auditID"] == missing_id]
    assert missing["responseStatus"]["reason"] == "NotFound"
    health, = [e for e in events if e["auditID"] == "chosen"]
    assert health["verb"] == "get" and health["user"]["username"] == "system:admin"
    refused, = [e for e in events if e["auditID"] == refused_id]
    assert refused["stage"] == "ResponseStarted" and refused["user"] == {}
    assert refused["verb"] == "list"
    assert refused["responseStatus"] == {"metadata": {}, "status": "Failure",
                                         "message": "Unauthorized", "reason": "Unauthorized",
                                         "code": 401}


async def test_rotates_at_maxsize_and_keeps_maxbackup(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    log_path = tmp_path / "audit.log"
    auditor = audit.from_flags(str(policy), str(log_path), max_size=1, max_backups=2)
    async with running_apiserver(tmp_path, auditor=auditor) as server:
        big = "x" * 100_000
        connector = aiohttp.TCPConnector(ssl=server.ssl())
        async with aiohttp.ClientSession(connector=connector) as s:
            for i in range(30):  # each create logs its body twice: ~6 MB of events
                async with s.post(server.url + "/api/v1/namespaces/default/configmaps",
                                  json={"metadata": {"name": f"big{i}"},
                                        "data": {"v": big}}) as r:
                    assert r.status == 201
        assert auditor.sink.flush()
    names = sorted(os.listdir(tmp_path))
    backups = [n for n in names if n.startswith("audit-")]
    assert len(backups) == 2, names
    assert all(re.fullmatch(r"audit-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log", n)
               for n in backups)
    for name in backups + ["audit.log"]:
        path = tmp_path / name
        assert path.stat().st_size <= 1024 * 1024
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for line in path.read_text().splitlines():
            assert json.loads(line)["kind"] == "Event"
    # the newest events are in the current file
    last = json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])
    assert last["objectRef"]["name"] == "big29"


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs, to fill up."""
    with small_tmpfs(tmp_path / "disk", "1m") as mount:
        yield mount


async def test_a_full_disk_loses_events_not_the_server(tmp_path, small_disk, caplog):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    log_path = small_disk / "audit.log"
    auditor = audit.from_flags(str(policy), str(log_path))
    filler = small_disk / "filler"
    async with running_apiserver(tmp_path, auditor=auditor) as server:
        connector = aiohttp.TCPConnector(ssl=server.ssl())
        async with aiohttp.ClientSession(connector=connector) as s:
            async def get(name):
                async with s.get(f"{server.url}/api/v1/namespaces/default/pods/{name}") as r:
                    assert r.status == 404
            await get("before")
            assert auditor.sink.flush()
            with open(filler, "wb", buffering=0) as f:  # fill the disk to the last block
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass
            for i in range(20):
                await get(f"lost{i}")
            assert auditor.sink.flush()
            failures = [r for r in caplog.records if "write failed" in r.getMessage()]
            assert len(failures) == 1 and "No space left" in failures[0].getMessage()
            filler.unlink()
            await get("after")
            await eventually(lambda: auditor.sink.flush() and "/pods/after" in
                             log_path.read_text(), what="writing after the disk has room")
    assert any("writing again after" in r.getMessage() for r in caplog.records)
    lines = log_path.read_text().splitlines()  # whole events only, none cut in half
    assert [json.loads(line)["requestURI"].rsplit("/", 1)[1] for line in lines][0] == "before"


def test_k8py_server_refuses_a_malformed_policy(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n")
    proc = subprocess.run(
        [sys.executable, "-m", "k8py", "server", "--data-dir", str(tmp_path / "data"),
         "--audit-policy-file", str(policy), "--audit-log-path", str(tmp_path / "a.log")],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert ("Invalid value for '--audit-policy-file': loading audit policy file: "
            'rules[0].level: Unsupported value: "Loud": supported values: "None", "Metadata",'
            f' "Request", "RequestResponse": from file {policy}') in proc.stderr
    legacy = subprocess.run(
        [sys.executable, "-m", "k8py", "server", "--data-dir", str(tmp_path / "data"),
         "--audit-log-format", "legacy"], capture_output=True, text=True, timeout=60)
    assert legacy.returncode == 2 and "'legacy'" in legacy.stderr and "json" in legacy.stderr


def test_k8py_server_audits_to_standard_output(tmp_path):
    """The flags through `k8py server` to the API server, `-` as the log path."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig.yaml"
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8py", "server", "--disable-agent", "--disable-scheduler",
         "--disable-controller-manager", "--datastore-endpoint", "memory://",
         "--data-dir", str(tmp_path / "data"), "--bind-address", "127.0.0.1",
         "--https-listen-port", str(port), "--write-kubeconfig", str(kubeconfig),
         "--audit-policy-file", str(policy), "--audit-log-path", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for(lambda: kubeconfig.exists() or proc.poll() is not None, 30, "the server")
        assert proc.poll() is None
        tls = tmp_path / "data" / "server" / "tls"
        context = ssl.create_default_context(cafile=str(tls / "server-ca.crt"))
        context.load_cert_chain(str(tls / "client-admin.crt"), str(tls / "client-admin.key"))
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/api/v1/namespaces/default/pods/p", method="GET")
        try:
            urllib.request.urlopen(request, context=context, timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
            audit_id = exc.headers["Audit-ID"]
        watchdog = threading.Timer(30, proc.kill)  # a server that writes nothing: no hang
        watchdog.start()
        try:
            line = proc.stdout.readline()  # the first event: nothing else is audited
        finally:
            watchdog.cancel()
        event = json.loads(line)
        assert (event["auditID"], event["verb"], event["responseStatus"]["code"]) == (
            audit_id, "get", 404)
    finally:
        stop_process(proc)
