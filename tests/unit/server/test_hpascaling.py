"""Stabilization and rate limits of the HPA controller, after upstream's
TestNormalizeDesiredReplicas* and TestScalingWithRules (horizontal_test.go)."""

from __future__ import annotations

from k8py.server.controllers.hpascaling import ScaleEvent, ScalingHistory

NOW = 1_000_000.0


def history(**kwargs) -> ScalingHistory:
    return ScalingHistory(clock=lambda: NOW, **kwargs)


def behavior(up_policies=None, down_policies=None, up_select="Max", down_select="Max",
             up_window=0, down_window=300):
    return {"scaleUp": {"stabilizationWindowSeconds": up_window, "selectPolicy": up_select,
                        "policies": up_policies or [
                            {"type": "Pods", "value": 4, "periodSeconds": 60},
                            {"type": "Percent", "value": 100, "periodSeconds": 60}]},
            "scaleDown": {"stabilizationWindowSeconds": down_window,
                          "selectPolicy": down_select, "policies": down_policies or [
                              {"type": "Percent", "value": 100, "periodSeconds": 15}]}}


def test_no_behavior_scale_up_limit_and_clamps():
    found = history().normalize(2, 20, 1, 100)
    assert found.replicas == 4
    assert found.scaling_limited == ("True", "ScaleUpLimit", "the desired replica count is "
                                     "increasing faster than the maximum scale rate")
    found = history().normalize(5, 20, 1, 8)
    assert (found.replicas, found.scaling_limited[1]) == (8, "TooManyReplicas")
    found = history().normalize(3, 0, 2, 8)
    assert (found.replicas, found.scaling_limited[1]) == (2, "TooFewReplicas")
    found = history().normalize(3, 5, 1, 8)
    assert found.scaling_limited == ("False", "DesiredWithinRange",
                                     "the desired count is within the acceptable range")
    assert found.able_to_scale == ("True", "ReadyForNewScale",
                                   "recommended size matches current size")


def test_downscale_stabilization_window():
    scaling = history(downscale_stabilization=300)
    scaling.recommendations = [(10, NOW - 100), (12, NOW - 400)]
    found = scaling.normalize(10, 5, 1, 20)
    assert found.replicas == 10
    assert found.able_to_scale[1] == "ScaleDownStabilized"
    # the sample outside the window was replaced by the new recommendation
    assert sorted(scaling.recommendations) == [(5, NOW), (10, NOW - 100)]
    scaling.recommendations = [(10, NOW - 400)]
    assert scaling.normalize(10, 5, 1, 20).replicas == 5


def test_behavior_scale_up_policies():
    assert history().normalize_with_behavior(behavior(), 2, 20, 1, 100).replicas == 6
    found = history().normalize_with_behavior(behavior(up_select="Min"), 2, 20, 1, 100)
    assert (found.replicas, found.scaling_limited[:2]) == (4, ("True", "ScaleUpLimit"))
    found = history().normalize_with_behavior(behavior(up_select="Disabled"), 2, 20, 1, 100)
    assert found.replicas == 2
    percent = [{"type": "Percent", "value": 50, "periodSeconds": 60}]
    # rounded up: 3 * 1.5 = 4.5 -> 5
    assert history().normalize_with_behavior(behavior(percent), 3, 20, 1, 100).replicas == 5
    found = history().normalize_with_behavior(behavior(), 8, 20, 1, 10)
    assert (found.replicas, found.scaling_limited[1]) == (10, "TooManyReplicas")


def test_behavior_counts_changes_in_the_period():
    scaling = history()
    scaling.scale_up_events = [ScaleEvent(4, NOW - 30)]
    pods = [{"type": "Pods", "value": 4, "periodSeconds": 60}]
    # the period started at 2: 2 + 4 = 6 is reached already
    assert scaling.normalize_with_behavior(behavior(pods), 6, 20, 1, 100).replicas == 6
    scaling.scale_up_events = [ScaleEvent(4, NOW - 90)]
    assert scaling.normalize_with_behavior(behavior(pods), 6, 20, 1, 100).replicas == 10


def test_behavior_scale_down_policies():
    half = [{"type": "Percent", "value": 50, "periodSeconds": 60}]
    found = history().normalize_with_behavior(behavior(down_policies=half, down_window=0),
                                              10, 1, 1, 20)
    assert (found.replicas, found.scaling_limited[1]) == (5, "ScaleDownLimit")
    two = [{"type": "Pods", "value": 2, "periodSeconds": 60}]
    found = history().normalize_with_behavior(
        behavior(down_policies=half + two, down_select="Min", down_window=0), 10, 1, 1, 20)
    assert found.replicas == 8  # the smaller change
    found = history().normalize_with_behavior(behavior(down_window=0), 10, 1, 3, 20)
    assert (found.replicas, found.scaling_limited[1]) == (3, "TooFewReplicas")
    scaling = history()
    scaling.scale_down_events = [ScaleEvent(5, NOW - 30)]
    # the period started at 10: half of it is 5, reached already
    assert scaling.normalize_with_behavior(behavior(down_policies=half, down_window=0),
                                           5, 1, 1, 20).replicas == 5


def test_behavior_stabilization():
    scaling = history()
    scaling.recommendations = [(3, NOW - 10)]
    found = scaling.normalize_with_behavior(behavior(up_window=60), 3, 10, 1, 100)
    assert found.replicas == 3
    assert found.able_to_scale[1] == "ScaleUpStabilized"
    scaling = history()
    scaling.recommendations = [(8, NOW - 10)]
    found = scaling.normalize_with_behavior(behavior(), 8, 2, 1, 100)
    assert (found.replicas, found.able_to_scale[1]) == (8, "ScaleDownStabilized")


def test_nil_scale_down_window_is_the_flag():
    rules = behavior()
    del rules["scaleDown"]["stabilizationWindowSeconds"]
    scaling = history(downscale_stabilization=60)
    scaling.recommendations = [(8, NOW - 90)]
    assert scaling.normalize_with_behavior(rules, 8, 2, 1, 100).replicas == 2


def test_record_scale_reuses_outdated_events():
    scaling = history()
    rules = behavior()
    scaling.scale_up_events = [ScaleEvent(1, NOW - 600)]
    scaling.record_scale(rules, 2, 5)
    assert [(e.change, e.timestamp) for e in scaling.scale_up_events] == [(3, NOW)]
    scaling.record_scale(None, 5, 2)
    assert scaling.scale_down_events == []
