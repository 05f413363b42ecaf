"""The audit policy: upstream's rule matching (its checker_test cases), loading and its
error messages."""

from __future__ import annotations

import json

import pytest

from k8py.server.apiserver import auditpolicy
from k8py.server.apiserver.auditpolicy import PolicyError, parse
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.requestinfo import request_info

TESTER = User("tester", ("foo", "bar"))
ADMIN = User("admin", ("admin",))

REQUESTS = {
    "namespaced": (TESTER, "GET", "/api/v1/namespaces/default/pods/busybox"),
    "cluster": (TESTER, "GET", "/api/v1/nodes/mynode"),
    "nonResource": (TESTER, "GET", "/logs/kubelet.log"),
    "subresource": (TESTER, "GET", "/api/v1/namespaces/default/pods/busybox/log"),
    "scale": (TESTER, "PATCH", "/apis/apps/v1/namespaces/default/deployments/d/scale"),
    "Unauthorized": (None, "GET", "/api/v1/namespaces/default/pods/busybox"),
    "admin": (ADMIN, "DELETE", "/apis/rbac.authorization.k8s.io/v1/clusterroles/c"),
}


def _level(rule: dict, request: str, omit_stages=()) -> str:
    user, method, path = REQUESTS[request]
    policy = parse(json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                               "rules": [{"level": "Metadata", **rule}]}))
    return policy.evaluate(user, request_info(method, path, {})).level


RULES = {
    "default": {},
    "create": {"verbs": ["create"]},
    "tims": {"users": ["tim"], "resources": [{"group": "", "resources": ["pods"]}]},
    "tester": {"users": ["tester"]},
    "foo-group": {"userGroups": ["foo"]},
    "authenticated": {"userGroups": ["system:authenticated"]},
    "getPods": {"verbs": ["get"], "resources": [{"resources": ["pods"]}]},
    "getPodLogs": {"verbs": ["get"], "resources": [{"resources": ["pods/log"]}]},
    "getPodWildcardMatching": {"verbs": ["get"], "resources": [{"resources": ["*"]}]},
    "getPodResourceWildcardMatching": {"verbs": ["get"], "resources": [{"resources": ["*/log"]}]},
    "getPodSubResourceWildcardMatching": {"verbs": ["get"],
                                          "resources": [{"resources": ["pods/*"]}]},
    "anyScale": {"resources": [{"group": "apps", "resources": ["*/scale"]}]},
    "getClusterRoles": {"verbs": ["get"], "resources": [
        {"group": "rbac.authorization.k8s.io", "resources": ["clusterroles"]}]},
    "getLogs": {"verbs": ["get"], "nonResourceURLs": ["/logs*"]},
    "getMetrics": {"verbs": ["get"], "nonResourceURLs": ["/metrics"]},
    "clusterRoleEdit": {"resources": [{"group": "rbac.authorization.k8s.io",
                                       "resources": ["clusterroles"]}]},
    "defaultNamespace": {"namespaces": ["default"]},
    "defaultOrClusterScoped": {"namespaces": ["default", ""]},
    "nonDefaultNamespace": {"namespaces": ["kube-system"]},
    "namedPod": {"resources": [{"resources": ["pods"], "resourceNames": ["busybox"]}]},
    "otherPod": {"resources": [{"resources": ["pods"], "resourceNames": ["other"]}]},
    "allGroups": {"resources": [{"group": "apps"}, {"group": ""}]},
}

MATCHES = [
    ("namespaced", "default", True), ("namespaced", "create", False),
    ("namespaced", "tims", False), ("namespaced", "tester", True),
    ("namespaced", "foo-group", True), ("namespaced", "authenticated", True),
    ("namespaced", "getPods", True), ("namespaced", "getPodLogs", False),
    ("namespaced", "getPodWildcardMatching", True), ("namespaced", "getClusterRoles", False),
    ("namespaced", "getLogs", False), ("namespaced", "defaultNamespace", True),
    ("namespaced", "defaultOrClusterScoped", True), ("namespaced", "nonDefaultNamespace", False),
    ("namespaced", "namedPod", True), ("namespaced", "otherPod", False),
    ("namespaced", "allGroups", True),
    ("cluster", "defaultNamespace", False), ("cluster", "defaultOrClusterScoped", True),
    ("cluster", "getPods", False), ("cluster", "getPodWildcardMatching", True),
    ("nonResource", "getLogs", True), ("nonResource", "getMetrics", False),
    ("nonResource", "getPods", False), ("nonResource", "defaultOrClusterScoped", False),
    ("nonResource", "tester", True),
    ("subresource", "getPods", False), ("subresource", "getPodLogs", True),
    ("subresource", "getPodWildcardMatching", True),
    ("subresource", "getPodResourceWildcardMatching", True),
    ("subresource", "getPodSubResourceWildcardMatching", True),
    ("scale", "anyScale", True), ("scale", "getPodResourceWildcardMatching", False),
    ("Unauthorized", "tester", False), ("Unauthorized", "foo-group", False),
    ("Unauthorized", "authenticated", False), ("Unauthorized", "getPods", True),
    ("admin", "clusterRoleEdit", True), ("admin", "getClusterRoles", False),
    ("admin", "allGroups", False),
]


@pytest.mark.parametrize("request_name, rule, matches", MATCHES)
def test_rule_matching(request_name, rule, matches):
    assert (_level(RULES[rule], request_name) == "Metadata") is matches


def test_first_match_wins_and_nothing_matching_is_none():
    policy = parse("""
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
omitManagedFields: true
rules:
- level: None
  users: [system:kube-proxy]
- level: Request
  resources: [{group: "", resources: [configmaps]}]
  omitStages: [ResponseStarted]
  omitManagedFields: false
- level: RequestResponse
  resources: [{group: "", resources: [configmaps, pods]}]
""")
    proxy = User("system:kube-proxy")
    cm = request_info("GET", "/api/v1/namespaces/a/configmaps", {})
    pods = request_info("POST", "/api/v1/namespaces/a/pods", {})
    assert policy.evaluate(proxy, cm).level == "None"
    decision = policy.evaluate(TESTER, cm)
    assert decision == auditpolicy.Decision(
        "Request", frozenset({"RequestReceived", "ResponseStarted"}), False)
    assert policy.evaluate(TESTER, pods) == auditpolicy.Decision(
        "RequestResponse", frozenset({"RequestReceived"}), True)
    assert policy.evaluate(TESTER, request_info("GET", "/healthz", {})) == \
        auditpolicy.Decision("None", frozenset({"RequestReceived"}), True)


def test_json_policy_and_unknown_fields_are_lenient(caplog):
    policy = parse(json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                               "metadata": {"name": "p"}, "surprise": 1,
                               "rules": [{"level": "Metadata", "colour": "red"}]}))
    assert policy.evaluate(TESTER, request_info("GET", "/version", {})).level == "Metadata"
    assert "falling back to lenient decoding" in caplog.text and "colour" in caplog.text


@pytest.mark.parametrize("text, message", [
    ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: []",
     "loaded illegal policy with 0 rules"),
    ("kind: Policy\napiVersion: audit.k8s.io/v1beta1\nrules: [{level: None}]",
     'failed decoding: no kind "Policy" is registered for version "audit.k8s.io/v1beta1"'),
    ("apiVersion: audit.k8s.io/v1\nrules: [{level: None}]",
     "failed decoding: Object 'Kind' is missing in"),
    ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: [{level: Everything}]",
     'rules[0].level: Unsupported value: "Everything": supported values: "None", '
     '"Metadata", "Request", "RequestResponse"'),
    ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: [{users: [a]}]",
     "rules[0].level: Required value"),
    ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: [{level: None, "
     "nonResourceURLs: [healthz, /a*b]}]",
     "[rules[0].nonResourceURLs[0]: Invalid value: \"healthz\": non-resource URL rules must "
     "begin with a '/' character, rules[0].nonResourceURLs[1]: Invalid value: \"/a*b\": "
     "non-resource URL wildcards '*' must be the final character of the rule]"),
    ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: [{level: None, nonResourceURLs: [/x],"
     " namespaces: [a]}]",
     'rules[0].nonResourceURLs: Invalid value: []string{"/x"}: rules cannot apply to both '
     "regular resources and non-resource URLs"),
    ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: [{level: None, resources: "
     "[{group: rbac.authorization.k8s.io/v1}]}]",
     'rules[0].resources.group: Invalid value: "rbac.authorization.k8s.io/v1": a lowercase '
     "RFC 1123 subdomain"),
    ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: [{level: None, resources: "
     "[{resourceNames: [x]}]}]",
     'rules[0].resources.resourceNames: Invalid value: []string{"x"}: using resourceNames '
     "requires at least one resource"),
    ("kind: Policy\napiVersion: audit.k8s.io/v1\nomitStages: [Sometimes]\nrules: "
     "[{level: None}]",
     'omitStages[0]: Invalid value: "Sometimes": allowed stages are RequestReceived,'
     "ResponseStarted,ResponseComplete,Panic"),
    ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: {level: None}",
     "failed decoding: rules: expected a list"),
    ("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: [{level: None, users: x}]",
     "failed decoding: rules[0].users: expected a list of strings"),
    ("rules: [", "failed decoding: invalid YAML"),
    ("[1, 2]", "failed decoding: the policy must be an object"),
])
def test_malformed_policies(text, message):
    with pytest.raises(PolicyError) as caught:
        parse(text)
    assert str(caught.value).startswith(message)


def test_load_names_the_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("kind: Policy\napiVersion: audit.k8s.io/v1\nrules: []\n")
    with pytest.raises(PolicyError, match=f"^loaded illegal policy with 0 rules: from file "
                                          f"{path}$"):
        auditpolicy.load(str(path))
    with pytest.raises(PolicyError, match="failed to read file path"):
        auditpolicy.load(str(tmp_path / "missing.yaml"))
