"""The server's authorization, assembled from `--authorization-mode` (default `Node,RBAC`,
as k3s runs kube-apiserver).

`Authorization` builds the union (`authz.Union`): system:masters first (upstream's
privileged group), then each mode in order — `Node` (`nodeauthz`), `RBAC` (`rbac`),
`AlwaysAllow` (everyone may do everything: for benchmarks and tests that measure without
authorization). It owns the caches those modes read (informers over the in-process
transport, as the API server's own identity, `API_SERVER`), started with the application;
a decision waits until they have listed once, so a fresh server never refuses for want of
a cache.

It also answers the reviews: SubjectAccessReviews (`decide`) and SelfSubjectRulesReviews
(`rules_review`: the RBAC rules of a user in a namespace, plus, for a node, those of
`system:node` that the Node authorizer holds; `incomplete` as upstream says for the Node
authorizer: true when it might allow more than the rules show).
"""

from __future__ import annotations

import asyncio
from typing import Any

from k8py.api import errors
from k8py.server.apiserver import authz, nodeauthz, rbac, reviews
from k8py.server.apiserver.authn import User
from k8py.server.apiserver.authz import API_SERVER, Attributes
MODES = ("AlwaysAllow", "Node", "RBAC")
SYNC_TIMEOUT = 60.0


def parse_modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"--authorization-mode: unknown mode(s) {', '.join(unknown) or '(none)'}"
                         f"; known: {', '.join(MODES)}")
    return modes


class Authorization:
    def __init__(self, modes: tuple[str, ...], client_factory):
        """`client_factory(user)` makes a client that acts as `user` in process."""
        self.modes = modes
        self.policy: rbac.Policy | None = None
        self.graph: nodeauthz.NodeGraph | None = None
        self.node_authorizer: nodeauthz.NodeAuthorizer | None = None
        members: list[authz.Authorizer] = [authz.PrivilegedGroup()]
        for mode in modes:
            if mode == "AlwaysAllow":
                members.append(authz.AlwaysAllow())
            elif mode == "Node":
                self.graph = nodeauthz.NodeGraph(client_factory(API_SERVER))
                self.node_authorizer = nodeauthz.NodeAuthorizer(self.graph)
                members.append(self.node_authorizer)
            elif mode == "RBAC":
                self.policy = rbac.Policy(client_factory(API_SERVER))
                members.append(rbac.RBACAuthorizer(self.policy))
        self.authorizer = authz.Union(members)
        self._ready = asyncio.Event()
        self._starting: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.create_task(self._start(), name="authorization-caches")

    async def _start(self) -> None:
        await asyncio.gather(*(c.start() for c in (self.policy, self.graph) if c is not None))
        self._ready.set()

    async def stop(self) -> None:
        for cache in (self.policy, self.graph):
            if cache is not None:
                await cache.stop()
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)

    async def wait_ready(self) -> None:
        if self._ready.is_set():
            return
        self.start()
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                await self._ready.wait()
        except asyncio.TimeoutError:
            raise errors.ServiceUnavailable("the authorization caches are not ready yet") \
                from None

    async def check(self, attributes: Attributes) -> None:
        """Raise upstream's 403 unless allowed."""
        if authz.PRIVILEGED_GROUP in attributes.user.groups:
            return
        await self.wait_ready()
        authz.check(self.authorizer, attributes)

    async def decide(self, attributes: Attributes) -> authz.Decision:
        if authz.PRIVILEGED_GROUP in attributes.user.groups:
            return authz.ALLOW, ""
        await self.wait_ready()
        return self.authorizer.authorize(attributes)

    async def rules_review(self, user: User, namespace: str) -> dict[str, Any]:
        await self.wait_ready()
        attributes = Attributes(user, "")
        groups = attributes.groups()
        if authz.PRIVILEGED_GROUP in groups or "AlwaysAllow" in self.modes:
            return reviews.everything()
        rules: list[rbac.Rule] = []
        problems: list[str] = []
        if self.policy is not None:
            rules, problems = self.policy.rules_for(user.name, groups, namespace)
        incomplete = False
        if self.node_authorizer is not None and \
                nodeauthz.node_name(user.name, groups) is not None:
            rules = [*rules, *self.node_authorizer.node_rules]
            incomplete = True  # it also allows the secrets etc. of its pods
        resource_rules, non_resource_rules = [], []
        for rule in rules:
            source = rule.source
            if source.get("resources"):
                entry = {"verbs": list(source.get("verbs") or [])}
                entry["apiGroups"] = list(source.get("apiGroups") or [])
                entry["resources"] = list(source["resources"])
                if source.get("resourceNames"):
                    entry["resourceNames"] = list(source["resourceNames"])
                resource_rules.append(entry)
            if source.get("nonResourceURLs"):
                non_resource_rules.append({"verbs": list(source.get("verbs") or []),
                                           "nonResourceURLs": list(source["nonResourceURLs"])})
        status: dict[str, Any] = {"resourceRules": resource_rules,
                                  "nonResourceRules": non_resource_rules,
                                  "incomplete": incomplete}
        if problems:
            status["evaluationError"] = rbac.aggregate_errors(problems)
        return status
