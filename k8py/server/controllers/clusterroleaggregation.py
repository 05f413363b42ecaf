"""The ClusterRole aggregation controller: a ClusterRole with an `aggregationRule` gets the
rules of every ClusterRole its selectors match, as upstream's clusterrole-aggregation
controller (`admin`, `edit` and `view` are such roles: `system:aggregate-to-edit` and any
role a user labels `rbac.authorization.k8s.io/aggregate-to-edit: "true"` add to `edit`).

Rules are gathered from the matching roles in name order, each rule once, the aggregated
role itself excluded; the role is rewritten only when its rules differ. Any ClusterRole
change requeues every aggregated role (there are few).
"""

from __future__ import annotations

from typing import Any

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.api.selectors import selector_matches
from k8py.server.controllers.base import Controller

CLUSTER_ROLES = builtin("rbac.authorization.k8s.io/v1", "clusterroles")


class ClusterRoleAggregationController(Controller):
    name = "clusterrole-aggregation"
    service_account = "clusterrole-aggregation-controller"
    workers = 1

    def setup(self) -> None:
        self.roles = self.informer(CLUSTER_ROLES)
        self.roles.add_handlers(self._changed, lambda old, new: self._changed(new),
                                self._changed)

    def _changed(self, role: dict[str, Any]) -> None:
        for candidate in self.roles.list():
            if candidate.get("aggregationRule"):
                self.enqueue_object(candidate)

    def aggregated_rules(self, role: dict[str, Any]) -> list[dict[str, Any]]:
        selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
        rules: list[dict[str, Any]] = []
        name = role["metadata"]["name"]
        for other in sorted(self.roles.list(), key=lambda r: r["metadata"]["name"]):
            if other["metadata"]["name"] == name:
                continue
            labels = other["metadata"].get("labels") or {}
            if not any(isinstance(s, dict) and selector_matches(s, labels) for s in selectors):
                continue
            for rule in other.get("rules") or []:
                if rule not in rules:
                    rules.append(rule)
        return rules

    async def reconcile(self, key: str) -> float | None:
        role = self.roles.get(key)
        if role is None or not role.get("aggregationRule"):
            return None
        rules = self.aggregated_rules(role)
        if rules == (role.get("rules") or []):
            return None
        try:
            await self.client.update(CLUSTER_ROLES, {**role, "rules": rules})
        except errors.NotFound:
            pass
        return None
