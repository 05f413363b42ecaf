"""Decoding Kubernetes protobuf bodies, against bytes built by hand from the wire format."""

from __future__ import annotations

import pytest

from k8py.api.protobuf import MAGIC, ProtobufError, decode_body
from k8py.api.protobuf_messages import MESSAGES


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return varint(number << 3) + varint(payload & ((1 << 64) - 1))
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = field(1, api_version.encode()) + field(2, kind.encode())
    return MAGIC + field(1, type_meta) + field(2, raw) + field(3, b"") + field(4, b"")


def test_configmap_with_labels_and_data():
    metadata = field(1, b"cm") + field(3, b"") + field(11, field(1, b"app") + field(2, b"x"))
    raw = field(1, metadata) + field(2, field(1, b"k") + field(2, b"v")) + \
        field(2, field(1, b"empty") + field(2, b""))
    obj = decode_body(envelope("v1", "ConfigMap", raw))
    assert obj == {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cm", "labels": {"app": "x"}},
                   "data": {"k": "v", "empty": ""}}


def test_deployment_with_int_or_string_quantity_and_negative_numbers():
    container = field(1, b"web") + field(2, b"nginx") + \
        field(6, field(3, 80)) + \
        field(8, field(1, field(1, b"cpu") + field(2, field(1, b"500m"))))
    pod_spec = field(2, container) + field(4, (1 << 64) - 1)  # terminationGracePeriod -1
    strategy = field(2, field(1, field(1, 1) + field(3, b"25%")) + field(2, field(2, 1)))
    spec = field(1, 3) + field(3, field(2, pod_spec)) + field(4, strategy)
    obj = decode_body(envelope("apps/v1", "Deployment", field(1, field(1, b"d")) + field(2, spec)))
    assert obj["spec"]["replicas"] == 3
    assert obj["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": 1}
    container = obj["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"containerPort": 80}]
    assert container["resources"] == {"limits": {"cpu": "500m"}}
    assert obj["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == -1


def test_secret_bytes_become_base64():
    raw = field(1, field(1, b"s")) + field(2, field(1, b"p") + field(2, b"q"))
    assert decode_body(envelope("v1", "Secret", raw))["data"] == {"p": "cQ=="}


def _pod_with_probe_port(int_or_string: bytes) -> bytes:
    """A pod whose container's readinessProbe.tcpSocket.port is the IntOrString given."""
    probe = field(1, field(3, field(1, int_or_string)))
    container = field(1, b"c") + field(2, b"busybox") + field(11, probe)
    return envelope("v1", "Pod", field(1, field(1, b"p")) + field(2, field(2, container)))


@pytest.mark.parametrize("body, message", [
    (b"not protobuf", "prefix"),
    (MAGIC + b"\x0a\x05ab", "truncated"),
    (envelope("v1", "Node", b""), "does not decode protobuf Node"),
    (envelope("v1", "ConfigMap", field(99, b"x")), "field 99 of ConfigMap"),
    (envelope("v1", "ConfigMap", field(1, field(1, b"\xff\xfe"))), "UTF-8"),
    # what the hostile-input campaign found: each was a 500
    (envelope("v1", "ConfigMap", field(1, field(8, field(1, 1 << 62)))), "years 1 to 9999"),
    (envelope("v1", "ConfigMap", field(1, field(8, field(1, -62_135_596_801)))),
     "years 1 to 9999"),
    (envelope("v1", "ConfigMap", field(1, field(8, field(1, b"soon")))), "wire type 2"),
    (envelope("v1", "ConfigMap", field(1, field(17, field(7, field(
        1, b'{"a":' * 50_000 + b"1" + b"}" * 50_000))))), "fieldsV1"),
    (_pod_with_probe_port(field(1, 0) + field(2, b"80")), "wire type 2"),
    (_pod_with_probe_port(field(1, 7)), "IntOrString of type 7"),
])
def test_bad_bodies_are_named(body, message):
    with pytest.raises(ProtobufError, match=message):
        decode_body(body)


def test_every_message_the_tables_name_is_in_them():
    specials = {"Time", "Quantity", "IntOrString", "FieldsV1"}
    for name, fields in MESSAGES.items():
        for number, (json_name, kind, *flags) in fields.items():
            value = kind[2] if isinstance(kind, tuple) else kind
            assert value in MESSAGES or value in specials or value in (
                "string", "bytes", "int32", "int64", "bool"), (name, number, value)


def test_eviction_with_delete_options():
    options = field(1, 0) + field(2, field(1, b"uid-1")) + field(4, b"Foreground") + \
        field(5, b"All")
    raw = field(1, field(1, b"web-1") + field(3, b"default")) + field(2, options)
    assert decode_body(envelope("policy/v1", "Eviction", raw)) == {
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "web-1", "namespace": "default"},
        "deleteOptions": {"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-1"},
                          "propagationPolicy": "Foreground", "dryRun": ["All"]}}


@pytest.mark.parametrize("api_version", ["v1", "batch/v1", "meta.k8s.io/v1"])
def test_delete_options_of_any_group_version(api_version):
    # what kubectl drain --disable-eviction sends: an empty DeleteOptions
    assert decode_body(envelope(api_version, "DeleteOptions", b"")) == {
        "apiVersion": api_version, "kind": "DeleteOptions"}


def test_defaulted_pod_template_round_trips():
    """The shape of a pod template the server has defaulted, as `kubectl create job
    --from=cronjob/x` sends it back: empty securityContext, zero Times, pointers to zero."""
    capabilities = field(1, b"NET_ADMIN") + field(2, b"ALL")
    security = field(1, capabilities) + field(4, 0) + field(5, 1) + \
        field(11, field(1, b"RuntimeDefault"))
    env = field(1, b"NODE") + field(3, field(1, field(1, b"v1") + field(2, b"spec.nodeName")))
    container = field(1, b"c") + field(2, b"busybox") + field(6, field(2, 0) + field(3, 80)) + \
        field(7, env) + field(8, b"") + field(13, b"/dev/termination-log") + \
        field(14, b"IfNotPresent") + field(15, security) + field(16, 0) + \
        field(20, b"File")
    pod_security = field(2, 1000) + field(4, 3) + field(4, 4) + \
        field(7, field(1, b"net.core.somaxconn") + field(2, b"1024"))
    volume = field(1, b"cfg") + field(2, field(19, field(1, field(1, b"settings")) +
                                                field(3, 420)))
    toleration = field(1, b"node.kubernetes.io/not-ready") + field(2, b"Exists") + \
        field(4, b"NoExecute") + field(5, 300)
    affinity = field(1, field(1, field(1, field(1, field(1, b"zone") + field(2, b"In") +
                                                          field(3, b"a")))))
    pod_spec = field(1, volume) + field(2, container) + field(3, b"Never") + \
        field(4, 30) + field(6, b"ClusterFirst") + field(11, 0) + \
        field(18, affinity) + field(19, b"default-scheduler") + field(22, toleration) + \
        field(14, pod_security)
    template = field(1, field(8, b"") + field(11, field(1, b"app") + field(2, b"x"))) + \
        field(2, pod_spec)
    spec = field(6, template) + field(7, 6) + field(10, 0)
    meta = field(1, b"by-hand") + field(12, field(1, b"cronjob.kubernetes.io/instantiate") +
                                         field(2, b"manual"))
    obj = decode_body(envelope("batch/v1", "Job", field(1, meta) + field(2, spec)))
    assert obj["spec"]["backoffLimit"] == 6 and obj["spec"]["suspend"] is False
    template = obj["spec"]["template"]
    assert template["metadata"] == {"labels": {"app": "x"}}  # zero creationTimestamp left out
    pod = template["spec"]
    assert pod["securityContext"] == {
        "runAsUser": 1000, "supplementalGroups": [3, 4],
        "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}
    assert "hostNetwork" not in pod  # a zero non-pointer bool, as Go's JSON leaves it out
    assert pod["volumes"] == [{"name": "cfg", "configMap": {"name": "settings",
                                                           "defaultMode": 420}}]
    assert pod["tolerations"] == [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                   "effect": "NoExecute", "tolerationSeconds": 300}]
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]}
    container = pod["containers"][0]
    assert container["ports"] == [{"containerPort": 80}]  # hostPort 0 left out
    assert container["env"] == [{"name": "NODE", "valueFrom": {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}]
    assert container["resources"] == {}
    assert container["securityContext"] == {
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}, "runAsUser": 0,
        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert "stdin" not in container


def test_managed_fields_and_times():
    entry = field(1, b"kubectl") + field(2, b"Update") + field(4, field(1, 1700000000)) + \
        field(6, b"FieldsV1") + field(7, field(1, b'{"f:data":{}}'))
    raw = field(1, field(1, b"cm") + field(17, entry))
    obj = decode_body(envelope("v1", "ConfigMap", raw))
    assert obj["metadata"]["managedFields"] == [
        {"manager": "kubectl", "operation": "Update", "time": "2023-11-14T22:13:20Z",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]


def test_ingress_with_inline_rule_value_and_backends():
    service = lambda name, port: field(4, field(1, name) + field(2, port))  # noqa: E731
    path = field(1, b"/bar") + field(2, service(b"svc1", field(2, 8080))) + field(3, b"Prefix")
    rule = field(1, b"foo.com") + field(2, field(1, field(1, path)))
    spec = field(1, service(b"def", field(1, b"http"))) + \
        field(2, field(1, b"foo.com") + field(2, b"cert")) + field(3, rule) + \
        field(4, b"nginx")
    raw = field(1, field(1, b"ing")) + field(2, spec) + field(3, field(1, b""))
    assert decode_body(envelope("networking.k8s.io/v1", "Ingress", raw)) == {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "ing"},
        "spec": {"defaultBackend": {"service": {"name": "def", "port": {"name": "http"}}},
                 "tls": [{"hosts": ["foo.com"], "secretName": "cert"}],
                 "rules": [{"host": "foo.com", "http": {"paths": [{
                     "path": "/bar", "pathType": "Prefix",
                     "backend": {"service": {"name": "svc1", "port": {"number": 8080}}}}]}}],
                 "ingressClassName": "nginx"},
        "status": {"loadBalancer": {}}}


@pytest.mark.parametrize("kind", ["Role", "ClusterRole"])
def test_roles_and_aggregation(kind):
    rule = field(1, b"get") + field(1, b"list") + field(2, b"") + field(3, b"pods") + \
        field(4, b"a")
    raw = field(1, field(1, b"r")) + field(2, rule) + field(2, field(1, b"get") +
                                                           field(5, b"/logs/*"))
    if kind == "ClusterRole":
        raw += field(3, field(1, field(1, field(1, b"team") + field(2, b"a"))))
    obj = decode_body(envelope("rbac.authorization.k8s.io/v1", kind, raw))
    # apiGroups [""]: an empty string in a repeated field stays
    assert obj["rules"] == [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"],
                             "resourceNames": ["a"]},
                            {"verbs": ["get"], "nonResourceURLs": ["/logs/*"]}]
    if kind == "ClusterRole":
        assert obj["aggregationRule"] == {"clusterRoleSelectors": [
            {"matchLabels": {"team": "a"}}]}


@pytest.mark.parametrize("kind", ["RoleBinding", "ClusterRoleBinding"])
def test_bindings_keep_required_empty_strings(kind):
    subject = field(1, b"ServiceAccount") + field(2, b"") + field(3, b"default") + \
        field(4, b"kube-system")
    role_ref = field(1, b"rbac.authorization.k8s.io") + field(2, b"ClusterRole") + \
        field(3, b"view")
    raw = field(1, field(1, b"b")) + field(2, subject) + field(3, role_ref)
    obj = decode_body(envelope("rbac.authorization.k8s.io/v1", kind, raw))
    assert obj["subjects"] == [{"kind": "ServiceAccount", "name": "default",
                                "namespace": "kube-system"}]  # apiGroup omitempty
    assert obj["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": "view"}
    role_ref = field(1, b"") + field(2, b"Role") + field(3, b"x")
    obj = decode_body(envelope("rbac.authorization.k8s.io/v1", kind, field(3, role_ref)))
    assert obj["roleRef"] == {"apiGroup": "", "kind": "Role", "name": "x"}  # no omitempty


def test_resource_quota_with_scope_selector():
    hard = field(1, field(1, b"cpu") + field(2, field(1, b"1"))) + \
        field(1, field(1, b"pods") + field(2, field(1, b"2")))
    selector = field(1, field(1, b"PriorityClass") + field(2, b"In") + field(3, b"high"))
    spec = hard + field(2, b"BestEffort") + field(3, selector)
    raw = field(1, field(1, b"q")) + field(2, spec) + field(3, b"")
    assert decode_body(envelope("v1", "ResourceQuota", raw)) == {
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
        "spec": {"hard": {"cpu": "1", "pods": "2"}, "scopes": ["BestEffort"],
                 "scopeSelector": {"matchExpressions": [
                     {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}},
        "status": {}}


def test_priority_class_keeps_a_zero_value():
    raw = field(1, field(1, b"zero")) + field(2, 0) + field(3, 0) + field(4, b"") + \
        field(5, b"PreemptLowerPriority")
    assert decode_body(envelope("scheduling.k8s.io/v1", "PriorityClass", raw)) == {
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "zero"}, "value": 0, "preemptionPolicy": "PreemptLowerPriority"}
    raw = field(1, field(1, b"neg")) + field(2, (1 << 64) - 5) + field(3, 1)
    obj = decode_body(envelope("scheduling.k8s.io/v1", "PriorityClass", raw))
    assert obj["value"] == -5 and obj["globalDefault"] is True


def test_token_request():
    bound = field(1, b"Pod") + field(2, b"v1") + field(3, b"web") + field(4, b"uid-1")
    spec = field(1, b"https://kubernetes.default.svc") + field(4, 3600) + field(3, bound)
    raw = field(1, field(1, b"robot") + field(3, b"default")) + field(2, spec) + \
        field(3, field(1, b"") + field(2, b""))
    assert decode_body(envelope("authentication.k8s.io/v1", "TokenRequest", raw)) == {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "metadata": {"name": "robot", "namespace": "default"},
        "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600,
                 "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web",
                                    "uid": "uid-1"}},
        "status": {"token": ""}}


def test_service_with_an_empty_status():
    # what `kubectl create service clusterip x --tcp=80:8080` sends: status.loadBalancer {}
    port = field(1, b"80-8080") + field(2, b"TCP") + field(3, 80) + \
        field(4, field(1, 0) + field(2, 8080))
    spec = field(1, port) + field(2, field(1, b"app") + field(2, b"x")) + field(4, b"ClusterIP")
    raw = field(1, field(1, b"x")) + field(2, spec) + field(3, field(1, b""))
    obj = decode_body(envelope("v1", "Service", raw))
    assert obj["spec"] == {"ports": [{"name": "80-8080", "protocol": "TCP", "port": 80,
                                      "targetPort": 8080}],
                           "selector": {"app": "x"}, "type": "ClusterIP"}
    assert obj["status"] == {"loadBalancer": {}}


def test_times_are_written_with_four_digit_years():
    raw = field(1, field(1, b"cm") + field(9, field(1, -62_135_596_800)))  # 0001-01-01
    assert decode_body(envelope("v1", "ConfigMap", raw))["metadata"]["deletionTimestamp"] == \
        "0001-01-01T00:00:00Z"
