"""A HorizontalPodAutoscaler on the shared lab, end to end: real pods burn CPU in busy loops,
the kubelets report it, the API server's metrics.k8s.io serves it, and the HPA controller
scales the Deployment up under the load and back down once the loops are told to stop (a
file each pod's loop watches), with `behavior` windows short enough for a test."""

from __future__ import annotations

import json

from tests.conftest import wait_for
from tests.e2e.labcluster import IMAGE

NAME = "hpa-burner"
# busy until /tmp/stop exists: 100m of CPU (the limit) against a 50m request, 200%
BURN = "while [ ! -e /tmp/stop ]; do :; done; exec sleep 3600"

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": NAME}},
             "template": {"metadata": {"labels": {"app": NAME}}, "spec": {
                 "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "burn", "image": IMAGE,
                                 "imagePullPolicy": "IfNotPresent",
                                 "command": ["sh", "-c", BURN],
                                 "resources": {"requests": {"cpu": "50m", "memory": "16Mi"},
                                               "limits": {"cpu": "100m",
                                                          "memory": "32Mi"}}}]}}}}
AUTOSCALER = {
    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": NAME},
    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
             "minReplicas": 1, "maxReplicas": 3,
             "metrics": [{"type": "Resource", "resource": {
                 "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
             "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0},
                          "scaleDown": {"stabilizationWindowSeconds": 0, "policies": [
                              {"type": "Percent", "value": 100, "periodSeconds": 15}]}}}}


def replicas(lab) -> int:
    hpa = json.loads(lab.kubectl("get", "hpa", NAME, "-o", "json").stdout)
    return hpa.get("status", {}).get("desiredReplicas", 0)


def rescale_messages(lab) -> list[str]:
    events = json.loads(lab.kubectl(
        "get", "events", "--field-selector",
        f"involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name={NAME},"
        "reason=SuccessfulRescale", "-o", "json").stdout)["items"]
    return [e["message"] for e in events]


def test_hpa_scales_up_under_load_and_down_after(lab):
    lab.kubectl("apply", "-f", "-", input=json.dumps(DEPLOYMENT))
    lab.kubectl("apply", "-f", "-", input=json.dumps(AUTOSCALER))
    try:
        # 200% of the request against a 50% target: 4 wanted, 3 allowed
        wait_for(lambda: replicas(lab) == 3, timeout=150, interval=2,
                 what="the HPA scaling up to its maximum")
        assert any(m == "New size: 3; reason: cpu resource utilization (percentage of "
                   "request) above target" for m in rescale_messages(lab)), \
            rescale_messages(lab)
        hpa = json.loads(lab.kubectl("get", "hpa", NAME, "-o", "json").stdout)
        limited = {c["type"]: c for c in hpa["status"]["conditions"]}["ScalingLimited"]
        assert (limited["status"], limited["reason"]) == ("True", "TooManyReplicas")
        lab.kubectl("wait", "--for=condition=Available", f"deployment/{NAME}",
                    "--timeout=90s")
        wait_for(lambda: lab.kubectl("wait", "--for=condition=Ready", "pod", "-l",
                                     f"app={NAME}", "--timeout=5s", check=False)
                 .stdout.count("condition met") == 3, timeout=90, interval=1,
                 what="three burners ready")

        # the load ends: every burner is told to stop
        pods = lab.kubectl("get", "pods", "-l", f"app={NAME}", "-o",
                           "jsonpath={.items[*].metadata.name}").stdout.split()
        for pod in pods:
            lab.kubectl("exec", pod, "--", "touch", "/tmp/stop")
        wait_for(lambda: replicas(lab) == 1, timeout=150, interval=2,
                 what="the HPA scaling back down")
        assert any(m == "New size: 1; reason: All metrics below target"
                   for m in rescale_messages(lab)), rescale_messages(lab)
        wait_for(lambda: json.loads(lab.kubectl("get", "deployment", NAME, "-o", "json")
                                    .stdout)["spec"]["replicas"] == 1,
                 timeout=30, what="the Deployment at one replica")
    finally:
        lab.kubectl("delete", "hpa", NAME, "--ignore-not-found", check=False)
        lab.kubectl("delete", "deployment", NAME, "--ignore-not-found", "--wait=true",
                    check=False)
