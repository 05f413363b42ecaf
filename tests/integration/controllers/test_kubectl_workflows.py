"""kubectl workflows that send protobuf or read protobuf OpenAPI: `drain` (cordon, then a
policy/v1 Eviction per pod, retried while a PodDisruptionBudget forbids it), `drain
--disable-eviction` (pod deletes with a protobuf DeleteOptions), `create job
--from=cronjob/...` (a whole defaulted pod template as protobuf) and `apply -f` of a
`kind: List` (validated by kubectl against `/openapi/v2` as protobuf), every typed `kubectl
create <kind>` (each sent as protobuf; `create token` prints a JWT that authenticates), and
the columns `kubectl get` prints (server-side tables) for the kinds upstream has printers
for."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import yaml

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.server.controllers.base import is_active_pod, is_pod_ready
from tests.conftest import eventually

CRONJOBS = builtin("batch/v1", "cronjobs")
DEPLOYMENTS = builtin("apps/v1", "deployments")
JOBS = builtin("batch/v1", "jobs")
NODES = builtin("v1", "nodes")
PODS = builtin("v1", "pods")


def deployment(name: str, replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "c", "image": "web:1"}]}}}}


async def ready_pods(client, app: str) -> list[dict]:
    pods = (await client.list(PODS, "default", label_selector=f"app={app}"))["items"]
    return [p for p in pods if is_active_pod(p) and is_pod_ready(p)]


async def test_drain_evicts_within_the_budget_and_cordons(cluster):
    client = cluster.client
    # every pod on sim-node-0 first: the others are cordoned while the deployment starts
    for node in ("sim-node-1", "sim-node-2"):
        await cluster.akubectl("cordon", node)
    await client.create(DEPLOYMENTS, deployment("web", 3))
    await cluster.akubectl("create", "poddisruptionbudget", "web", "--selector=app=web",
                           "--min-available=2")

    async def three_on_node_0():
        pods = await ready_pods(client, "web")
        return len(pods) == 3 and {p["spec"]["nodeName"] for p in pods} == {"sim-node-0"}

    await eventually(three_on_node_0, 15, what="3 ready pods on sim-node-0")
    for node in ("sim-node-1", "sim-node-2"):
        await cluster.akubectl("uncordon", node)

    lowest = 3

    async def watch_ready():
        nonlocal lowest
        while True:
            lowest = min(lowest, len(await ready_pods(client, "web")))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch_ready())
    try:
        proc = await cluster.akubectl("drain", "sim-node-0", "--ignore-daemonsets",
                                      "--delete-emptydir-data", "--timeout=60s", timeout=90)
    finally:
        watcher.cancel()
    assert "node/sim-node-0 drained" in proc.stdout
    # at most one disruption at a time: kubectl met the budget (429) and retried
    assert "disruption budget" in proc.stderr
    assert lowest >= 2
    node = await client.get(NODES, "sim-node-0")
    assert node["spec"]["unschedulable"] is True

    async def moved():
        pods = await ready_pods(client, "web")
        return len(pods) == 3 and "sim-node-0" not in {p["spec"]["nodeName"] for p in pods}

    await eventually(moved, 15, what="3 ready pods off sim-node-0")


async def test_drain_without_eviction_deletes(cluster):
    client = cluster.client
    await client.create(DEPLOYMENTS, deployment("plain", 4))
    await eventually(lambda: _count(client, "plain", 4), 15, what="4 ready pods")
    await cluster.akubectl("drain", "sim-node-1", "--ignore-daemonsets", "--disable-eviction",
                           "--timeout=30s", timeout=60)

    async def gone_from_node_1():
        pods = await ready_pods(client, "plain")
        return len(pods) == 4 and all(p["spec"]["nodeName"] != "sim-node-1" for p in pods)

    await eventually(gone_from_node_1, 15, what="pods recreated off sim-node-1")


async def _count(client, app: str, count: int) -> bool:
    return len(await ready_pods(client, app)) == count


async def test_create_job_from_cronjob_keeps_the_whole_template(cluster):
    pod_spec = {
        "restartPolicy": "Never",
        "securityContext": {"runAsUser": 1000, "runAsGroup": 0, "fsGroup": 2000,
                            "supplementalGroups": [3], "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}],
                            "seLinuxOptions": {"level": "s0:c123,c456"}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "batch",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}}]}},
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}},
                    {"name": "cfg", "configMap": {"name": "settings", "optional": True}}],
        "containers": [{
            "name": "work", "image": "busybox:1.36", "command": ["sh", "-c", "true"],
            "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                          "limits": {"memory": "32Mi"}},
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                                "readOnlyRootFilesystem": True, "runAsUser": 0,
                                "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}},
            "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5},
            "lifecycle": {"preStop": {"sleep": {"seconds": 1}}},
        }],
    }
    cronjob = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "default"},
        "spec": {"schedule": "0 3 * * *", "suspend": True, "jobTemplate": {"spec": {
            "backoffLimit": 0, "template": {
                "metadata": {"labels": {"app": "nightly"},
                             "annotations": {"k8py.io/simulate-exit-code": "0"}},
                "spec": pod_spec}}}},
    }
    created = await cluster.client.create(CRONJOBS, cronjob)
    await cluster.akubectl("create", "job", "by-hand", "--from=cronjob/nightly")
    job = await cluster.client.get(JOBS, "by-hand", "default")
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    # the defaulted template went to kubectl as JSON and came back as protobuf: unchanged
    template = created["spec"]["jobTemplate"]["spec"]["template"]
    assert job["spec"]["template"]["spec"] == template["spec"]
    assert job["spec"]["template"]["metadata"]["annotations"] == \
        template["metadata"]["annotations"]
    assert job["spec"]["backoffLimit"] == 0
    await cluster.akubectl("wait", "--for=condition=complete", "job/by-hand", "--timeout=15s",
                           timeout=30)


LIST = {"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed"},
     "data": {"k": "v"}},
    {**deployment("listed", 1), "metadata": {"name": "listed"}},
]}


async def test_apply_a_list(cluster, tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps(LIST))
    proc = await cluster.akubectl("apply", "-f", str(path))
    assert proc.stdout.split("\n")[:2] == ["configmap/listed created",
                                           "deployment.apps/listed created"]
    await eventually(lambda: _count(cluster.client, "listed", 1), 15, what="1 ready pod")
    changed = json.loads(json.dumps(LIST))
    changed["items"][0]["data"]["k"] = "w"
    path.write_text(json.dumps(changed))
    proc = await cluster.akubectl("apply", "-f", str(path))
    assert "configmap/listed configured" in proc.stdout
    assert "deployment.apps/listed unchanged" in proc.stdout
    cm = await cluster.client.get(builtin("v1", "configmaps"), "listed", "default")
    assert cm["data"] == {"k": "w"}


async def test_apply_a_list_validates_its_items_on_the_client(cluster, tmp_path):
    wrong = json.loads(json.dumps(LIST))
    wrong["items"][1]["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    wrong["items"][0]["metadata"]["name"] = "never"
    path = tmp_path / "list.json"
    path.write_text(json.dumps(wrong))
    proc = await cluster.akubectl("apply", "-f", str(path), check=False)
    assert proc.returncode != 0
    # kubectl's own message: it read the protobuf OpenAPI and found the field unknown
    assert 'unknown field "imagee"' in proc.stderr, proc.stderr
    assert "error validating data" in proc.stderr
    proc = await cluster.akubectl("get", "configmap", "never", check=False)
    assert proc.returncode != 0


def _r(api_version: str, plural: str):
    return builtin(api_version, plural)


# every typed `kubectl create <kind>`: the arguments, where the object lands, and what of it
# the server must have stored (kubectl sends each as protobuf)
CREATES = [
    (["service", "clusterip", "ci", "--tcp=80:8080"], ("v1", "services", "ci"),
     lambda o: o["spec"]["type"] == "ClusterIP" and o["spec"]["clusterIP"] and
     o["spec"]["ports"][0]["port"] == 80 and o["spec"]["ports"][0]["targetPort"] == 8080),
    (["service", "nodeport", "np", "--tcp=81:8081", "--node-port=30081"],
     ("v1", "services", "np"),
     lambda o: o["spec"]["type"] == "NodePort" and o["spec"]["ports"][0]["nodePort"] == 30081),
    (["service", "loadbalancer", "lb", "--tcp=82:8082"], ("v1", "services", "lb"),
     lambda o: o["spec"]["type"] == "LoadBalancer" and o["spec"]["ports"][0]["port"] == 82),
    (["service", "externalname", "en", "--external-name=example.com"],
     ("v1", "services", "en"),
     lambda o: o["spec"]["type"] == "ExternalName" and
     o["spec"]["externalName"] == "example.com"),
    (["ingress", "ing", "--class=default", "--rule=foo.com/bar*=svc1:8080,tls=my-cert",
      "--rule=/path=svc2:http", "--default-backend=defsvc:80", "--annotation=a=b"],
     ("networking.k8s.io/v1", "ingresses", "ing"),
     lambda o: o["metadata"]["annotations"] == {"a": "b"} and o["spec"] == {
         "ingressClassName": "default",
         "defaultBackend": {"service": {"name": "defsvc", "port": {"number": 80}}},
         "tls": [{"hosts": ["foo.com"], "secretName": "my-cert"}],
         "rules": [
             {"host": "foo.com", "http": {"paths": [
                 {"path": "/bar", "pathType": "Prefix",
                  "backend": {"service": {"name": "svc1", "port": {"number": 8080}}}}]}},
             {"http": {"paths": [
                 {"path": "/path", "pathType": "Exact",
                  "backend": {"service": {"name": "svc2", "port": {"name": "http"}}}}]}}]}),
    (["role", "reader", "--verb=get,list", "--resource=pods,deployments.apps",
      "--resource-name=a"], ("rbac.authorization.k8s.io/v1", "roles", "reader"),
     lambda o: o["rules"] == [
         {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
          "resourceNames": ["a"]},
         {"verbs": ["get", "list"], "apiGroups": ["apps"], "resources": ["deployments"],
          "resourceNames": ["a"]}]),
    (["clusterrole", "logs", "--verb=get", "--non-resource-url=/logs/*"],
     ("rbac.authorization.k8s.io/v1", "clusterroles", "logs"),
     lambda o: o["rules"] == [{"verbs": ["get"], "nonResourceURLs": ["/logs/*"]}]),
    (["clusterrole", "aggregated", "--aggregation-rule=team=a"],
     ("rbac.authorization.k8s.io/v1", "clusterroles", "aggregated"),
     lambda o: o["aggregationRule"] == {"clusterRoleSelectors": [
         {"matchLabels": {"team": "a"}}]}),
    (["rolebinding", "rb", "--role=reader", "--user=alice", "--group=devs",
      "--serviceaccount=default:default"],
     ("rbac.authorization.k8s.io/v1", "rolebindings", "rb"),
     lambda o: o["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                "name": "reader"} and o["subjects"] == [
         {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
         {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs"},
         {"kind": "ServiceAccount", "name": "default", "namespace": "default"}]),
    (["clusterrolebinding", "crb", "--clusterrole=logs", "--user=bob"],
     ("rbac.authorization.k8s.io/v1", "clusterrolebindings", "crb"),
     lambda o: o["roleRef"]["kind"] == "ClusterRole" and o["subjects"][0]["name"] == "bob"),
    (["quota", "q", "--hard=cpu=1,memory=1G,pods=2", "--scopes=BestEffort"],
     ("v1", "resourcequotas", "q"),
     lambda o: o["spec"] == {"hard": {"cpu": "1", "memory": "1G", "pods": "2"},
                             "scopes": ["BestEffort"]}),
    (["priorityclass", "high", "--value=1000", "--description=important",
      "--preemption-policy=Never"], ("scheduling.k8s.io/v1", "priorityclasses", "high"),
     lambda o: o["value"] == 1000 and o["description"] == "important" and
     o["preemptionPolicy"] == "Never" and "globalDefault" not in o),
    (["priorityclass", "zero", "--value=0", "--global-default"],
     ("scheduling.k8s.io/v1", "priorityclasses", "zero"),
     lambda o: o["value"] == 0 and o["globalDefault"] is True and
     o["preemptionPolicy"] == "PreemptLowerPriority"),
    (["poddisruptionbudget", "pdb", "--selector=app=x", "--max-unavailable=25%"],
     ("policy/v1", "poddisruptionbudgets", "pdb"),
     lambda o: o["spec"]["maxUnavailable"] == "25%" and
     o["spec"]["selector"] == {"matchLabels": {"app": "x"}}),
    (["configmap", "cm", "--from-literal=a=b"], ("v1", "configmaps", "cm"),
     lambda o: o["data"] == {"a": "b"}),
    (["secret", "generic", "gen", "--from-literal=a=b"], ("v1", "secrets", "gen"),
     lambda o: o["type"] == "Opaque" and o["data"] == {"a": "Yg=="}),
    (["secret", "docker-registry", "reg", "--docker-server=r.io", "--docker-username=u",
      "--docker-password=p"], ("v1", "secrets", "reg"),
     lambda o: o["type"] == "kubernetes.io/dockerconfigjson" and
     '"r.io"' in base64.b64decode(o["data"][".dockerconfigjson"]).decode()),
    (["secret", "tls", "tls", "--cert={cert}", "--key={key}"], ("v1", "secrets", "tls"),
     lambda o: o["type"] == "kubernetes.io/tls" and
     set(o["data"]) == {"tls.crt", "tls.key"}),
    (["namespace", "ns1"], ("v1", "namespaces", "ns1"),
     lambda o: o["spec"]["finalizers"] == ["kubernetes"]),
    (["serviceaccount", "sa1"], ("v1", "serviceaccounts", "sa1"),
     lambda o: o["metadata"]["name"] == "sa1"),
    (["deployment", "d", "--image=web:1", "--replicas=2", "--port=80"],
     ("apps/v1", "deployments", "d"),
     lambda o: o["spec"]["replicas"] == 2 and
     o["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 80),
    (["job", "j", "--image=busybox", "--", "true"], ("batch/v1", "jobs", "j"),
     lambda o: o["spec"]["template"]["spec"]["containers"][0]["command"] == ["true"]),
    (["cronjob", "cj", "--image=busybox", "--schedule=*/5 * * * *", "--", "true"],
     ("batch/v1", "cronjobs", "cj"),
     lambda o: o["spec"]["schedule"] == "*/5 * * * *"),
]


async def test_every_typed_create(cluster, tmp_path):
    tls = tmp_path / "data" / "server" / "tls"
    files = {"cert": str(tls / "serving.crt"), "key": str(tls / "serving.key")}
    for args, (api_version, plural, name), stored in CREATES:
        args = [a.format(**files) for a in args]
        proc = await cluster.akubectl("create", *args, check=False)
        assert proc.returncode == 0, (args, proc.stderr)
        resource = _r(api_version, plural)
        obj = await cluster.client.get(resource, name,
                                       "default" if resource.namespaced else None)
        assert stored(obj), (args, obj)


async def test_create_token_prints_a_token_that_authenticates(cluster, tmp_path):
    """`kubectl create token` (a protobuf TokenRequest): the JWT it prints is a bearer
    credential for the service account, with the duration, audience and pod asked for."""
    sa = builtin("v1", "serviceaccounts")

    async def default_account():
        try:
            return await cluster.client.get(sa, "default", "default")
        except errors.NotFound:
            return None

    account = await eventually(default_account, 15, what="the default service account")
    proc = await cluster.akubectl("create", "token", "default")
    token = proc.stdout.strip()
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token), proc.stdout
    claims = _claims(token)
    assert claims["sub"] == "system:serviceaccount:default:default"
    assert claims["kubernetes.io"]["serviceaccount"]["uid"] == account["metadata"]["uid"]
    assert claims["exp"] - claims["iat"] == 3600

    # the token alone (no client certificate) is enough to use the API
    with open(cluster.kubeconfig, encoding="utf-8") as f:
        admin = yaml.safe_load(f)
    admin["users"][0]["user"] = {"token": token}
    as_token = tmp_path / "token-kubeconfig.yaml"
    as_token.write_text(yaml.safe_dump(admin))
    proc = await cluster.akubectl("--kubeconfig", str(as_token), "auth", "whoami")
    assert "system:serviceaccount:default:default" in proc.stdout
    # it authenticates; RBAC grants the account nothing more, as upstream
    proc = await cluster.akubectl("--kubeconfig", str(as_token), "get", "serviceaccounts",
                                  check=False)
    assert proc.returncode == 1 and "Forbidden" in proc.stderr, proc.stderr
    assert 'User "system:serviceaccount:default:default" cannot list resource ' \
        '"serviceaccounts" in API group "" in the namespace "default"' in proc.stderr
    admin["users"][0]["user"] = {"token": token[:-2] + ("AA" if token[-2:] != "AA" else "BB")}
    as_token.write_text(yaml.safe_dump(admin))
    proc = await cluster.akubectl("--kubeconfig", str(as_token), "get", "serviceaccounts",
                                  check=False)
    assert proc.returncode == 1 and "Unauthorized" in proc.stderr, proc.stderr

    await cluster.client.create(PODS, {"metadata": {"name": "holder", "namespace": "default"},
                                       "spec": {"containers": [{"name": "c", "image": "x"}]}})
    proc = await cluster.akubectl("create", "token", "default", "--duration=2h",
                                  "--audience=vault", "--bound-object-kind=Pod",
                                  "--bound-object-name=holder")
    claims = _claims(proc.stdout.strip())
    assert claims["exp"] - claims["iat"] == 7200 and claims["aud"] == ["vault"]
    assert claims["kubernetes.io"]["pod"]["name"] == "holder"

    # the kubelet's way: in process, bound to the pod, for a projected volume
    answer = await cluster.client.create_subresource(sa, "default", "default", "token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3607, "boundObjectRef": {
            "kind": "Pod", "apiVersion": "v1", "name": "holder"}}})
    admin["users"][0]["user"] = {"token": answer["status"]["token"]}
    as_token.write_text(yaml.safe_dump(admin))
    proc = await cluster.akubectl("--kubeconfig", str(as_token), "auth", "whoami", "-o", "json")
    extra = json.loads(proc.stdout)["status"]["userInfo"]["extra"]
    assert extra["authentication.kubernetes.io/pod-name"] == ["holder"]

    proc = await cluster.akubectl("create", "token", "default", "--duration=1m", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        'error: failed to create token: TokenRequest.authentication.k8s.io "" is invalid: '
        "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 "
        "minutes")


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _table(stdout: str) -> list[list[str]]:
    """kubectl's columns, split on runs of two or more spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in stdout.strip().splitlines()]


async def test_get_prints_upstreams_columns(cluster):
    client = cluster.client
    await client.create(DEPLOYMENTS, deployment("shown", 2))
    await cluster.akubectl("expose", "deployment", "shown", "--port=80", "--target-port=8080")
    await cluster.akubectl("create", "pdb", "shown", "--selector=app=shown", "--min-available=1")
    daemonset = {**deployment("daemon", 1), "kind": "DaemonSet"}
    del daemonset["spec"]["replicas"]
    await client.create(builtin("apps/v1", "daemonsets"), daemonset)
    await eventually(lambda: _count(client, "shown", 2), 15, what="2 ready pods")

    async def sliced():
        proc = await cluster.akubectl("get", "endpointslices", "-l",
                                      "kubernetes.io/service-name=shown")
        rows = _table(proc.stdout)
        return len(rows) == 2 and rows[1][3].count(",") == 1 and rows

    rows = await eventually(sliced, 15, what="an EndpointSlice with both pods")
    assert rows[0] == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    assert rows[1][1:3] == ["IPv4", "8080"]
    pods = (await client.list(PODS, "default", label_selector="app=shown"))["items"]
    assert set(rows[1][3].split(",")) == {p["status"]["podIP"] for p in pods}

    rows = _table((await cluster.akubectl("get", "endpoints", "shown")).stdout)
    assert rows[0] == ["NAME", "ENDPOINTS", "AGE"]
    assert set(rows[1][1].split(",")) == {f"{p['status']['podIP']}:8080" for p in pods}

    rows = _table((await cluster.akubectl("get", "pdb", "shown")).stdout)
    assert rows[0] == ["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"]
    assert rows[1][:3] == ["shown", "1", "N/A"]

    rows = _table((await cluster.akubectl("get", "controllerrevisions")).stdout)
    assert rows[0] == ["NAME", "CONTROLLER", "REVISION", "AGE"]
    assert rows[1][1:3] == ["daemonset.apps/daemon", "1"]

    rows = _table((await cluster.akubectl("get", "nodes", "-o", "wide")).stdout)
    assert rows[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP",
                       "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    node = await client.get(NODES, "sim-node-0")
    internal = next(a["address"] for a in node["status"]["addresses"]
                    if a["type"] == "InternalIP")
    info = node["status"]["nodeInfo"]
    assert rows[1][:3] == ["sim-node-0", "Ready", "<none>"]
    assert rows[1][4:] == [info["kubeletVersion"], internal, "<none>", info["osImage"],
                           info["kernelVersion"], info["containerRuntimeVersion"]]

    await cluster.akubectl("create", "cronjob", "shown", "--image=busybox",
                           "--schedule=*/5 * * * *", "--", "true")
    rows = _table((await cluster.akubectl("get", "cronjobs", "-o", "wide")).stdout)
    assert rows[0] == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE",
                       "CONTAINERS", "IMAGES", "SELECTOR"]
    assert rows[1][:6] == ["shown", "*/5 * * * *", "<none>", "False", "0", "<none>"]
    assert rows[1][7:] == ["shown", "busybox", "<none>"]
