"""kubectl 1.32, unchanged, against k8py: what works today.

Not yet covered here (issue 3 continues): apply (needs OpenAPI and strategic merge patch),
server-side apply, Tables, explain, typed `create` (protobuf bodies), auth can-i, CRDs.
Manifests are created with --validate=false until OpenAPI is served.
"""

from __future__ import annotations

import json
import subprocess
import time

MANIFEST = """
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
  labels: {app: shop, tier: web}
data:
  color: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: busybox}]
"""


def test_version_reports_v1_32(cluster):
    out = cluster.kubectl("version", "-o", "json").stdout
    server = json.loads(out)["serverVersion"]
    assert server["minor"] == "32" and server["gitVersion"].endswith("+k8py")


def test_api_resources(cluster):
    out = cluster.kubectl("api-resources").stdout
    for line in ("deployments", "configmaps", "customresourcedefinitions", "leases"):
        assert line in out
    assert "deploy" in out  # short names


def test_create_get_and_output_formats(cluster):
    cluster.kubectl("create", "-f", "-", "--validate=false", input=MANIFEST)
    names = cluster.kubectl("get", "cm,deploy", "-n", "shop", "-o", "name").stdout.split()
    # kube-root-ca.crt is the cluster CA, published in every namespace as upstream does
    assert set(names) - {"configmap/kube-root-ca.crt"} == {"configmap/settings",
                                                           "deployment.apps/web"}
    color = cluster.kubectl("get", "cm", "settings", "-n", "shop",
                            "-o", "jsonpath={.data.color}").stdout
    assert color == "blue"
    yaml_out = cluster.kubectl("get", "deploy", "web", "-n", "shop", "-o", "yaml").stdout
    assert "replicas: 2" in yaml_out and "generation: 1" in yaml_out
    plain = cluster.kubectl("get", "ns").stdout
    assert "shop" in plain and "kube-system" in plain
    selected = cluster.kubectl("get", "cm", "-A", "-l", "tier=web", "-o", "name").stdout
    assert selected.split() == ["configmap/settings"]


def test_label_annotate_patch_replace_delete(cluster):
    cluster.kubectl("create", "-f", "-", "--validate=false", input="""
apiVersion: v1
kind: ConfigMap
metadata: {name: edit-me}
data: {a: "1"}
""")
    cluster.kubectl("label", "cm", "edit-me", "stage=test")
    cluster.kubectl("annotate", "cm", "edit-me", "note=hello")
    cluster.kubectl("patch", "cm", "edit-me", "--type=merge", "-p", '{"data":{"b":"2"}}')
    cluster.kubectl("patch", "cm", "edit-me", "--type=json",
                    "-p", '[{"op":"remove","path":"/data/a"}]')
    obj = json.loads(cluster.kubectl("get", "cm", "edit-me", "-o", "json").stdout)
    assert obj["metadata"]["labels"] == {"stage": "test"}
    assert obj["metadata"]["annotations"] == {"note": "hello"}
    assert obj["data"] == {"b": "2"}

    obj["data"]["c"] = "3"
    cluster.kubectl("replace", "-f", "-", "--validate=false", input=json.dumps(obj))
    stale = cluster.kubectl("replace", "-f", "-", "--validate=false", input=json.dumps(obj),
                            check=False)
    assert stale.returncode != 0 and "Conflict" in stale.stderr

    out = cluster.kubectl("delete", "cm", "edit-me").stdout
    assert 'configmap "edit-me" deleted' in out
    missing = cluster.kubectl("get", "cm", "edit-me", check=False)
    assert missing.returncode == 1
    assert 'Error from server (NotFound): configmaps "edit-me" not found' in missing.stderr


def test_errors_are_upstream_shaped(cluster):
    dup = cluster.kubectl("create", "namespace", "kube-system", check=False)
    assert dup.returncode != 0
    bad = cluster.kubectl("create", "-f", "-", "--validate=false", check=False, input="""
apiVersion: v1
kind: ConfigMap
metadata: {name: Not_Valid}
""")
    assert bad.returncode != 0
    assert "Invalid" in bad.stderr and "metadata.name" in bad.stderr


def test_get_watch_streams_changes(cluster):
    cluster.kubectl("create", "-f", "-", "--validate=false",
                    input="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\n")
    watcher = subprocess.Popen(
        [cluster.kubectl_path, "--cache-dir", str(cluster.root / "cache"), "get", "cm",
         "watched", "-w", "-o", "jsonpath={.data.n}{\"\\n\"}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env,
    )
    try:
        first = watcher.stdout.readline()  # the current state
        assert first == "\n"
        for n in ("1", "2"):
            cluster.kubectl("patch", "cm", "watched", "--type=merge",
                            "-p", json.dumps({"data": {"n": n}}))
        deadline = time.monotonic() + 20
        lines = []
        while len(lines) < 2 and time.monotonic() < deadline:
            lines.append(watcher.stdout.readline().strip())
        assert lines == ["1", "2"]
    finally:
        watcher.kill()
        watcher.wait()


def test_strategic_merge_patch_and_set_image(cluster):
    cluster.kubectl("create", "-f", "-", "--validate=false", input="""
apiVersion: apps/v1
kind: Deployment
metadata: {name: smp}
spec:
  selector: {matchLabels: {app: smp}}
  template:
    metadata: {labels: {app: smp}}
    spec:
      containers:
      - {name: main, image: busybox:1}
      - {name: side, image: busybox:1}
""")
    cluster.kubectl("patch", "deploy", "smp", "-p",
                    '{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"x:2"}]}}}}')
    cluster.kubectl("set", "image", "deploy/smp", "main=busybox:3")
    images = cluster.kubectl("get", "deploy", "smp", "-o",
                             "jsonpath={.spec.template.spec.containers[*].image}").stdout
    assert images == "busybox:3 x:2"
    generation = cluster.kubectl("get", "deploy", "smp", "-o",
                                 "jsonpath={.metadata.generation}").stdout
    assert generation == "3"


def test_get_prints_upstream_columns(cluster):
    cluster.kubectl("create", "-f", "-", "--validate=false", input="""
apiVersion: apps/v1
kind: Deployment
metadata: {name: cols}
spec:
  replicas: 3
  selector: {matchLabels: {app: cols}}
  template:
    metadata: {labels: {app: cols}}
    spec:
      containers: [{name: web, image: nginx}]
""")
    deadline = time.monotonic() + 20
    while True:  # the deployment controller writes the counts; no node runs the pods
        out = cluster.kubectl("get", "deploy", "cols", "-o", "wide").stdout.splitlines()
        if out[1].split()[:4] == ["cols", "0/3", "3", "0"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert out[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS",
                              "IMAGES", "SELECTOR"]
    assert out[1].split()[:4] == ["cols", "0/3", "3", "0"]
    assert out[1].split()[5:] == ["web", "nginx", "app=cols"]
    ns = cluster.kubectl("get", "ns", "kube-system").stdout.splitlines()
    assert ns[0].split() == ["NAME", "STATUS", "AGE"] and ns[1].split()[1] == "Active"


APPLY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: applied}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: applied}}
  template:
    metadata: {labels: {app: applied}}
    spec:
      containers:
      - {name: web, image: IMAGE}
      - {name: side, image: busybox}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: applied}
data: DATA
"""


def manifest(replicas=2, image="nginx:1", data='{a: "1"}'):
    return (APPLY.replace("REPLICAS", str(replicas)).replace("IMAGE", image)
            .replace("DATA", data))


def test_apply_create_then_change(cluster):
    out = cluster.kubectl("apply", "-f", "-", input=manifest()).stdout
    assert "deployment.apps/applied created" in out and "configmap/applied created" in out
    out = cluster.kubectl("apply", "-f", "-", input=manifest(5, "nginx:2", '{b: "2"}')).stdout
    assert "deployment.apps/applied configured" in out
    got = cluster.kubectl("get", "deploy", "applied", "-o", "jsonpath={.spec.replicas} "
                          "{.spec.template.spec.containers[*].image} "
                          "{.metadata.generation}").stdout
    assert got == "5 nginx:2 busybox 2"
    data = json.loads(cluster.kubectl("get", "cm", "applied", "-o", "jsonpath={.data}").stdout)
    assert data == {"b": "2"}, "apply removes keys dropped from the manifest"
    again = cluster.kubectl("apply", "-f", "-", input=manifest(5, "nginx:2", '{b: "2"}')).stdout
    assert "unchanged" in again


def test_apply_strict_validation_names_the_unknown_field(cluster):
    bad = manifest().replace("replicas: 2", "replicas: 2\n  replicaz: 3")
    proc = cluster.kubectl("apply", "-f", "-", input=bad, check=False)
    assert proc.returncode != 0
    assert 'unknown field "spec.replicaz"' in proc.stderr


def test_explain(cluster):
    out = cluster.kubectl("explain", "deployment.spec.strategy").stdout
    assert "KIND:       Deployment" in out and "rollingUpdate" in out
    out = cluster.kubectl("explain", "pods.spec.containers.image").stdout
    assert "image" in out and "string" in out


def test_scale(cluster):
    cluster.kubectl("create", "-f", "-", "--validate=false", input="""
apiVersion: apps/v1
kind: Deployment
metadata: {name: scaled}
spec:
  replicas: 1
  selector: {matchLabels: {app: scaled}}
  template:
    metadata: {labels: {app: scaled}}
    spec:
      containers: [{name: web, image: nginx}]
""")
    assert "scaled" in cluster.kubectl("scale", "deploy", "scaled", "--replicas=4").stdout
    got = cluster.kubectl("get", "deploy", "scaled",
                          "-o", "jsonpath={.spec.replicas} {.metadata.generation}").stdout
    assert got == "4 2"
    scale = json.loads(cluster.kubectl(
        "get", "--raw", "/apis/apps/v1/namespaces/default/deployments/scaled/scale").stdout)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4
    assert scale["status"]["selector"] == "app=scaled"
    stale = cluster.kubectl("scale", "deploy", "scaled", "--replicas=2",
                            "--resource-version=1", check=False)
    assert stale.returncode != 0 and "resource version" in stale.stderr


CRD_MANIFEST = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, shortNames: [gd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"""


def test_crds_and_custom_resources(cluster):
    cluster.kubectl("apply", "-f", "-", input=CRD_MANIFEST)
    cluster.kubectl("wait", "--for=condition=Established", "crd/gadgets.example.com",
                    "--timeout=20s")
    gadget = "apiVersion: example.com/v1\nkind: Gadget\nmetadata: {name: g1}\nspec: {size: 1}\n"
    assert "gadget.example.com/g1 created" in cluster.kubectl(
        "apply", "-f", "-", input=gadget).stdout
    assert "configured" in cluster.kubectl(
        "apply", "-f", "-", input=gadget.replace("size: 1", "size: 2")).stdout
    assert cluster.kubectl("get", "gd", "g1", "-o", "jsonpath={.spec.size}").stdout == "2"
    bad = cluster.kubectl("apply", "-f", "-", check=False,
                          input=gadget.replace("size: 1", "size: big"))
    assert bad.returncode != 0 and "must be of type integer" in bad.stderr
    cluster.kubectl("delete", "crd", "gadgets.example.com")
    gone = cluster.kubectl("get", "gadgets", check=False)
    assert gone.returncode != 0


def test_typed_create_commands_send_protobuf(cluster):
    cluster.kubectl("create", "namespace", "typed")
    cluster.kubectl("create", "configmap", "tc", "-n", "typed", "--from-literal=a=b")
    cluster.kubectl("create", "secret", "generic", "ts", "-n", "typed", "--from-literal=p=q")
    cluster.kubectl("create", "deployment", "td", "-n", "typed", "--image=nginx:1",
                    "--replicas=2", "--port=80")
    cluster.kubectl("create", "job", "tj", "-n", "typed", "--image=busybox", "--",
                    "echo", "hi")
    cm = json.loads(cluster.kubectl("get", "cm", "tc", "-n", "typed", "-o", "json").stdout)
    assert cm["data"] == {"a": "b"}
    secret = json.loads(cluster.kubectl("get", "secret", "ts", "-n", "typed",
                                        "-o", "json").stdout)
    assert secret["data"] == {"p": "cQ=="}  # base64 of "q"
    deployment = json.loads(cluster.kubectl("get", "deploy", "td", "-n", "typed",
                                            "-o", "json").stdout)
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1" and container["ports"][0]["containerPort"] == 80
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "td"}
    job = json.loads(cluster.kubectl("get", "job", "tj", "-n", "typed", "-o", "json").stdout)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]


def test_auth_can_i(cluster):
    proc = cluster.kubectl("auth", "can-i", "create", "pods")
    assert proc.stdout.strip() == "yes"


def test_server_side_apply(cluster):
    manifest_text = manifest(3, "nginx:1", '{a: "1"}').replace("applied", "ssa")
    assert "serverside-applied" in cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=manifest_text).stdout
    managed = json.loads(cluster.kubectl("get", "deploy", "ssa", "-o",
                                         "jsonpath={.metadata.managedFields}").stdout)
    # The deployment controller's own writes (revision annotation, status) are its entries.
    assert [(m["manager"], m["operation"]) for m in managed
            if m["manager"] != "k8py-controller-manager"] == [("kubectl", "Apply")]
    cluster.kubectl("scale", "deploy", "ssa", "--replicas=5")
    conflict = cluster.kubectl("apply", "--server-side", "-f", "-", input=manifest_text,
                               check=False)
    assert conflict.returncode != 0 and ".spec.replicas" in conflict.stderr
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-",
                    input=manifest_text.replace("side, image: busybox", "side, image: x:9"))
    got = cluster.kubectl("get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas} "
                          "{.spec.template.spec.containers[*].image}").stdout
    assert got == "3 nginx:1 x:9"


def test_describe_edit_diff_wait_and_cascading_delete(cluster, tmp_path):
    cluster.kubectl("apply", "-f", "-", input=manifest(2).replace("applied", "misc"))
    described = cluster.kubectl("describe", "deploy", "misc").stdout
    assert "Name:" in described and "misc" in described and "nginx:1" in described

    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/nginx:1/nginx:edited/' \"$1\"\n")
    editor.chmod(0o755)
    env = {**cluster.env, "KUBE_EDITOR": str(editor)}
    proc = subprocess.run([cluster.kubectl_path, "--cache-dir", str(cluster.root / "cache"),
                           "edit", "deploy", "misc"], env=env, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    image = cluster.kubectl("get", "deploy", "misc", "-o",
                            "jsonpath={.spec.template.spec.containers[0].image}").stdout
    assert image == "nginx:edited"

    changed = manifest(7).replace("applied", "misc")
    diff = cluster.kubectl("diff", "-f", "-", input=changed, check=False)
    assert diff.returncode == 1, diff.stderr  # 1 = differences found
    assert "+  replicas: 7" in diff.stdout
    replicas = cluster.kubectl("get", "deploy", "misc", "-o", "jsonpath={.spec.replicas}").stdout
    assert replicas == "2", "diff must not change anything"

    cluster.kubectl("label", "deploy", "misc", "ready=yes")
    cluster.kubectl("wait", "--for=jsonpath={.metadata.labels.ready}=yes", "deploy/misc",
                    "--timeout=20s")
    for cascade, name in (("background", "bg"), ("foreground", "fg"), ("orphan", "or")):
        cluster.kubectl("create", "configmap", f"del-{name}")
        out = cluster.kubectl("delete", "configmap", f"del-{name}", f"--cascade={cascade}",
                              "--wait=true", "--timeout=20s").stdout
        assert f'configmap "del-{name}" deleted' in out


def test_get_watch_prints_table_rows(cluster):
    cluster.kubectl("create", "configmap", "tw")
    watcher = subprocess.Popen(
        [cluster.kubectl_path, "--cache-dir", str(cluster.root / "cache"), "get", "cm", "tw",
         "-w"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env)
    try:
        header = watcher.stdout.readline().split()
        assert header == ["NAME", "DATA", "AGE"]
        assert watcher.stdout.readline().split()[:2] == ["tw", "0"]
        cluster.kubectl("patch", "cm", "tw", "--type=merge", "-p", '{"data":{"k":"v"}}')
        assert watcher.stdout.readline().split()[:2] == ["tw", "1"]
    finally:
        watcher.kill()
        watcher.wait()


def test_explain_custom_resource(cluster):
    cluster.kubectl("apply", "-f", "-", input=CRD_MANIFEST.replace("gadgets", "doodads")
                    .replace("gadget", "doodad").replace("Gadget", "Doodad")
                    .replace("[gd]", "[dd]"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/doodads.example.com",
                    "--timeout=20s")
    out = cluster.kubectl("explain", "doodads.spec").stdout
    assert "KIND:       Doodad" in out and "size" in out


def test_auth_whoami(cluster):
    out = cluster.kubectl("auth", "whoami", "-o", "json").stdout
    info = json.loads(out)["status"]["userInfo"]
    assert info["username"] == "system:admin"
    assert info["groups"] == ["system:masters", "system:authenticated"]
    table = cluster.kubectl("auth", "whoami").stdout
    assert "system:admin" in table and "system:authenticated" in table
