"""Deployment rollout arithmetic (k8py/server/controllers/rollout.py), against upstream's
deploymentutil behaviour."""

from __future__ import annotations

from k8py.server.controllers import rollout


def deployment(replicas: int = 10, surge=None, unavailable=None, strategy="RollingUpdate",
               **extra) -> dict:
    rolling = {}
    if surge is not None:
        rolling["maxSurge"] = surge
    if unavailable is not None:
        rolling["maxUnavailable"] = unavailable
    return {"metadata": {"name": "web", "generation": 1, **extra.pop("metadata", {})},
            "spec": {"replicas": replicas,
                     "strategy": {"type": strategy, "rollingUpdate": rolling}, **extra},
            "status": {}}


def replica_set(replicas: int, available: int = 0, **annotations) -> dict:
    return {"metadata": {"name": "web-x", "annotations": dict(annotations)},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "readyReplicas": available,
                       "availableReplicas": available}}


def test_fenceposts_round_surge_up_and_unavailability_down():
    assert rollout.fenceposts(deployment(10, "25%", "25%")) == (3, 2)
    assert rollout.fenceposts(deployment(1, "25%", "25%")) == (1, 0)
    assert rollout.fenceposts(deployment(10, 0, "0%")) == (0, 1)   # both 0: unavailable 1
    assert rollout.max_unavailable(deployment(2, 0, 5)) == 2       # never above replicas
    assert rollout.max_unavailable(deployment(0, 1, 1)) == 0
    assert rollout.fenceposts(deployment(10, strategy="Recreate")) == (0, 0)


def test_template_hash_ignores_its_own_label_and_empty_fields():
    template = {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}}
    labelled = {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1",
                                         "resources": {}}]}}
    assert rollout.equal_ignore_hash(template, labelled)
    assert rollout.template_hash(template, None) == rollout.template_hash(labelled, None)
    assert rollout.template_hash(template, None) != rollout.template_hash(template, 1)
    assert set(rollout.template_hash(template, None)) <= set(rollout.SAFE_ALPHABET)
    other = {**template, "spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}
    assert not rollout.equal_ignore_hash(template, other)


def test_new_set_annotations_copy_and_rollback_history():
    d = deployment(4, 1, 1, metadata={"annotations": {
        "kubernetes.io/change-cause": "v2", rollout.LAST_APPLIED: "{}", rollout.REVISION: "9"}})
    rs = replica_set(0)
    assert rollout.set_new_rs_annotations(d, rs, 1, exists=False)
    assert rs["metadata"]["annotations"] == {
        "kubernetes.io/change-cause": "v2", rollout.REVISION: "1",
        rollout.DESIRED_REPLICAS: "4", rollout.MAX_REPLICAS: "5"}
    assert not rollout.set_new_rs_annotations(d, rs, 1, exists=True)
    # The template came back at revision 3: the old number goes to the history.
    assert rollout.set_new_rs_annotations(d, rs, 3, exists=True)
    assert rs["metadata"]["annotations"][rollout.REVISION] == "3"
    assert rs["metadata"]["annotations"][rollout.REVISION_HISTORY] == "1"
    rollout.set_new_rs_annotations(d, rs, 5, exists=True)
    assert rs["metadata"]["annotations"][rollout.REVISION_HISTORY] == "1,3"


def test_new_set_replicas_respect_surge():
    d = deployment(10, 3, 2)
    old, new = replica_set(10, 10), replica_set(0)
    assert rollout.new_rs_replicas(d, [old, new], new) == 3
    old["spec"]["replicas"], new["spec"]["replicas"] = 8, 5
    assert rollout.new_rs_replicas(d, [old, new], new) == 5       # 13 already
    assert rollout.new_rs_replicas(deployment(10, strategy="Recreate"), [old, new], new) == 10


def test_proportional_scaling_share():
    # Two sets of 5 made for 10 (+3 surge); the deployment now wants 20 (+5 surge).
    d = deployment(20, "25%", "25%")
    rs = replica_set(5, 5, **{rollout.MAX_REPLICAS: "13"})
    assert rollout.proportion(rs, d, 15, 0) == 5       # round(5 * 25 / 13) - 5
    assert rollout.proportion(rs, d, 15, 12) == 3      # capped by what is left
    assert rollout.proportion(rs, deployment(0, 1, 1), -10, 0) == -5


def test_status_and_available_condition():
    d = deployment(10, 3, 2, metadata={"generation": 4})
    old, new = replica_set(2, 2), replica_set(10, 7)
    status = rollout.calculate_status([old, new], new, d)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 4, "replicas": 12, "updatedReplicas": 10, "readyReplicas": 9,
        "availableReplicas": 9, "unavailableReplicas": 3}
    [available] = status["conditions"]
    assert (available["type"], available["status"], available["reason"]) == (
        "Available", "True", "MinimumReplicasAvailable")
    status = rollout.calculate_status([replica_set(10, 7)], None, d)
    assert "updatedReplicas" not in status
    assert status["conditions"][0]["reason"] == "MinimumReplicasUnavailable"
    assert not rollout.deployment_complete(d, status)
