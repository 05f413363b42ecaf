"""Table printing: upstream's durations, pod status text and column sets."""

from __future__ import annotations

import pytest

from k8py.api.tables import human_duration, table


@pytest.mark.parametrize("seconds, text", [
    (-5, "<invalid>"), (-0.5, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (125, "2m5s"),
    (600, "10m"), (3 * 3600, "3h"), (3 * 3600 + 300, "3h5m"), (9 * 3600, "9h"),
    (50 * 3600, "2d2h"), (48 * 3600, "2d"), (30 * 86400, "30d"), (800 * 86400, "2y70d"),
    (9 * 365 * 86400, "9y"),
])
def test_human_duration_matches_upstream(seconds, text):
    assert human_duration(seconds) == text


def pod(**status):
    return {"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}, {"name": "d"}]}, "status": status}


@pytest.mark.parametrize("status, ready, text", [
    ({"phase": "Pending"}, "0/2", "Pending"),
    ({"phase": "Running", "containerStatuses": [
        {"name": "c", "ready": True, "state": {"running": {}}},
        {"name": "d", "ready": False, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "restartCount": 3}]}, "1/2", "CrashLoopBackOff"),
    ({"phase": "Succeeded", "containerStatuses": [
        {"name": "c", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "d", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]},
     "0/2", "Completed"),
])
def test_pod_rows(status, ready, text):
    t = table("", "pods", [pod(**status)])
    assert [c["name"] for c in t["columnDefinitions"]][:5] == [
        "Name", "Ready", "Status", "Restarts", "Age"]
    cells = t["rows"][0]["cells"]
    assert cells[1] == ready and cells[2] == text
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_unknown_kinds_get_name_and_age():
    t = table("example.com", "widgets", [{"metadata": {"name": "w"}}], include_object="None")
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Age"]
    assert t["rows"] == [{"cells": ["w", "<unknown>"]}]
