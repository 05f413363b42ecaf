"""Exact quantities (Go's canonical strings, Add's formats), ResourceList arithmetic, the
quota evaluators (usage, scopes, constraints) and the quota admission's decision."""

from __future__ import annotations

import pytest

from k8py.api import errors, quota, resourcelists
from k8py.api.quantity import BINARY_SI, DECIMAL_EXPONENT, DECIMAL_SI, Quantity
from k8py.api.resources import builtin
from k8py.server.apiserver.admission import CREATE, UPDATE, Attributes
from k8py.server.apiserver.resourcequota import check_request

PODS = builtin("v1", "pods")
SERVICES = builtin("v1", "services")


@pytest.mark.parametrize("text,canonical,form", [
    ("1500m", "1500m", DECIMAL_SI), ("1.5", "1500m", DECIMAL_SI), ("2000m", "2", DECIMAL_SI),
    ("1000", "1k", DECIMAL_SI), ("0.1", "100m", DECIMAL_SI), ("100Mi", "100Mi", BINARY_SI),
    ("1024Mi", "1Gi", BINARY_SI), ("1.5Ki", "1536", BINARY_SI), ("0.5Gi", "512Mi", BINARY_SI),
    ("12e6", "12e6", DECIMAL_EXPONENT), ("0Mi", "0", BINARY_SI), ("1G", "1G", DECIMAL_SI),
    ("0.0000000001", "1n", DECIMAL_SI), ("-1500m", "-1500m", DECIMAL_SI), (5, "5", DECIMAL_SI),
])
def test_quantities_print_canonically(text, canonical, form):
    parsed = Quantity.parse(text)
    assert (str(parsed), parsed.format) == (canonical, form)


def test_sums_keep_the_left_format_unless_it_is_zero():
    assert str(Quantity.parse("1Gi") + Quantity.parse("512Mi")) == "1536Mi"
    assert str(Quantity.parse("1G") + Quantity.parse("512Mi")) == "1536870912"
    assert str(Quantity(0) + Quantity.parse("1Gi")) == "1Gi"
    assert str(Quantity.parse("100m") + Quantity.parse("900m")) == "1"
    assert Quantity.parse("0.0001").milli() == 1 and Quantity.parse("1500m").whole() == 2


def test_resource_list_arithmetic():
    read = resourcelists.read
    a, b = read({"cpu": "1", "pods": "2"}), read({"cpu": "1500m", "memory": "1Gi"})
    assert resourcelists.written(resourcelists.add(a, b)) == {"cpu": "2500m", "pods": "2",
                                                              "memory": "1Gi"}
    assert resourcelists.written(resourcelists.subtract_non_negative(a, b)) == {
        "cpu": "0", "pods": "2", "memory": "0"}
    assert resourcelists.less_than_or_equal(b, a) == (False, ["cpu"])
    assert resourcelists.pretty(read({"pods": "1", "cpu": "2"})) == "cpu=2,pods=1"
    assert read({"cpu": "garbage", "pods": "1"}) == {"pods": Quantity(1)}


def pod(*containers, init=(), **spec):
    return {"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": list(containers), "initContainers": list(init), **spec}}


def container(name="c", requests=None, limits=None, **extra):
    return {"name": name, "resources": {"requests": requests or {}, "limits": limits or {}},
            **extra}


def test_pod_usage_counts_requests_limits_init_peaks_and_not_finished_pods():
    evaluator = quota.evaluator_for("", "pods")
    subject = pod(container("a", {"cpu": "250m", "memory": "64Mi"}, {"memory": "128Mi"}),
                  container("b", {"cpu": "250m", "nvidia.com/gpu": "1"}),
                  init=[container("i", {"cpu": "2"})])
    usage = resourcelists.written(evaluator.usage(subject))
    assert usage == {"count/pods": "1", "pods": "1", "cpu": "2", "requests.cpu": "2",
                     "memory": "64Mi", "requests.memory": "64Mi", "limits.memory": "128Mi",
                     "requests.nvidia.com/gpu": "1"}
    sidecar = pod(container("a", {"cpu": "1"}),
                  init=[container("s", {"cpu": "500m"}, restartPolicy="Always"),
                        container("i", {"cpu": "1"})])
    assert str(evaluator.usage(sidecar)["requests.cpu"]) == "1500m"
    finished = {**subject, "status": {"phase": "Succeeded"}}
    assert resourcelists.written(evaluator.usage(finished)) == {"count/pods": "1"}
    assert evaluator.releases(subject, finished) and not evaluator.releases(finished, subject)


def test_pod_scopes():
    evaluator = quota.evaluator_for("", "pods")
    best_effort = pod(container())
    burstable = pod(container(requests={"cpu": "1"}), activeDeadlineSeconds=30,
                    priorityClassName="high")
    scope = lambda name, op="Exists", values=None: {  # noqa: E731
        "scopeName": name, "operator": op, **({"values": values} if values else {})}
    assert evaluator.matches_scope(scope("BestEffort"), best_effort)
    assert evaluator.matches_scope(scope("NotBestEffort"), burstable)
    assert evaluator.matches_scope(scope("Terminating"), burstable)
    assert evaluator.matches_scope(scope("NotTerminating"), best_effort)
    assert evaluator.matches_scope(scope("PriorityClass"), burstable)
    assert not evaluator.matches_scope(scope("PriorityClass"), best_effort)
    assert evaluator.matches_scope(scope("PriorityClass", "In", ["high"]), burstable)
    assert evaluator.matches_scope(scope("PriorityClass", "NotIn", ["high"]), best_effort)
    quota_object = {"spec": {"scopes": ["BestEffort"]}, "status": {"hard": {"pods": "1"}}}
    assert evaluator.matches(quota_object, best_effort)
    assert not evaluator.matches(quota_object, burstable)
    # scoped quotas never match what has no scopes
    assert not quota.evaluator_for("", "configmaps").matches(
        {"spec": {"scopes": ["BestEffort"]}, "status": {"hard": {"configmaps": "1"}}}, {})


def test_pod_constraints_name_the_containers():
    evaluator = quota.evaluator_for("", "pods")
    subject = pod(container("b", {"cpu": "1"}), container("a"), init=[container("i")])
    assert evaluator.constraints(["limits.cpu", "requests.cpu", "pods"], subject) == (
        "must specify limits.cpu for: a,b,i; requests.cpu for: a,i")
    assert evaluator.constraints(["pods", "requests.storage"], subject) is None


def test_services_claims_and_counts():
    services = quota.evaluator_for("", "services")
    lb = {"spec": {"type": "LoadBalancer", "ports": [{"port": 1}, {"port": 2}]}}
    assert resourcelists.written(services.usage(lb)) == {
        "count/services": "1", "services": "1", "services.loadbalancers": "1",
        "services.nodeports": "2"}
    assert services.releases(lb, {"spec": {"type": "ClusterIP"}})
    claims = quota.evaluator_for("", "persistentvolumeclaims")
    claim = {"spec": {"storageClassName": "gold",
                      "resources": {"requests": {"storage": "1.5Gi"}}}}
    assert resourcelists.written(claims.usage(claim)) == {
        "persistentvolumeclaims": "1", "count/persistentvolumeclaims": "1",
        "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "1",
        "requests.storage": "1536Mi", "gold.storageclass.storage.k8s.io/requests.storage":
        "1536Mi"}
    assert claims.matching_resources(["gold.storageclass.storage.k8s.io/requests.storage",
                                      "pods"]) == [
        "gold.storageclass.storage.k8s.io/requests.storage"]
    deployments = quota.evaluator_for("apps", "deployments")
    assert deployments.names == ["count/deployments.apps"]
    assert deployments.handles(CREATE, None) and not deployments.handles(UPDATE, None)
    assert quota.evaluator_for("", "configmaps").names == ["count/configmaps", "configmaps"]
    assert quota.evaluator_for("", "events") is None
    assert quota.counted_resource("count/deployments.apps") == ("apps", "deployments")


def test_calculate_usage_follows_scopes_and_masks_to_hard():
    objects = {("", "pods"): [pod(container(requests={"cpu": "1"})), pod(container())]}
    item = {"spec": {"hard": {"pods": "5", "requests.cpu": "4"}, "scopes": ["NotBestEffort"]}}
    usage, measured = quota.calculate_usage(
        item, "ns", lambda group, plural, namespace: objects.get((group, plural), []))
    assert resourcelists.written(usage) == {"pods": "1", "requests.cpu": "1"}
    assert measured == {"pods", "requests.cpu"}


def attributes(obj, operation=CREATE, old=None, resource=PODS, dry_run=False):
    return Attributes(operation, resource, None, "ns", obj["metadata"]["name"], obj, old, None,
                      dry_run)


def quota_object(name, hard, used=None):
    status = {"hard": hard}
    if used is not None:
        status["used"] = used
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
            "spec": {"hard": hard}, "status": status}


def test_check_request_charges_and_refuses():
    evaluator = quota.evaluator_for("", "pods")
    quotas = [quota_object("count", {"pods": "2"}, {"pods": "1"}),
              quota_object("storage", {"requests.storage": "1Gi"}, {"requests.storage": "0"})]
    charged = check_request(quotas, attributes(pod(container())), evaluator)
    assert charged[0]["status"]["used"] == {"pods": "2"} and charged[1] is quotas[1]
    with pytest.raises(errors.Forbidden) as refused:
        check_request(charged, attributes(pod(container())), evaluator)
    assert refused.value.message == ('pods "p" is forbidden: exceeded quota: count, '
                                     'requested: pods=1, used: pods=2, limited: pods=2')
    with pytest.raises(errors.Forbidden) as refused:
        check_request([quota_object("new", {"pods": "2"})], attributes(pod(container())),
                      evaluator)
    assert refused.value.message == ('pods "p" is forbidden: status unknown for quota: new, '
                                     'resources: pods')
    # a quota whose status the controller has not written yet is not applied
    unsynced = [{"metadata": {"name": "q"}, "spec": {"hard": {"pods": "0"}}}]
    assert check_request(unsynced, attributes(pod(container())), evaluator) is unsynced


def test_check_request_charges_updates_by_what_they_add():
    evaluator = quota.evaluator_for("", "services")
    quotas = [quota_object("svc", {"services.nodeports": "2", "services": "5"},
                           {"services.nodeports": "1", "services": "1"})]
    old = {"metadata": {"name": "web", "resourceVersion": "7"},
           "spec": {"type": "NodePort", "ports": [{"port": 1}]}}
    new = {**old, "spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}}
    charged = check_request(quotas, attributes(new, UPDATE, old, SERVICES), evaluator)
    assert charged[0]["status"]["used"] == {"services.nodeports": "2", "services": "1"}
    shrunk = check_request(quotas, attributes(old, UPDATE, new, SERVICES), evaluator)
    assert shrunk is quotas
