"""Authorization microbenchmark: the cost of one decision of `--authorization-mode Node,RBAC`.

    .venv/bin/python bench/authz.py [--users 200] [--runs 20000]

Builds the server's real authorizer (`authorization.Authorization`: system:masters, the
Node authorizer, RBAC) over a real in-process API server on the memory store with the
bootstrap policy (`daemon.bootstrap`, as `k8py server` writes it), then adds `--users`
users, each with a Role and a RoleBinding in a namespace of its own and every fourth also
a ClusterRoleBinding to a ClusterRole of its own, and 10 pods on each of `--users / 2`
nodes, every pod using a Secret. Its caches fill through the in-process transport, as in
the server.

It then times `authorizer.authorize(attributes)` — what the authorization middleware calls
for every request once the caches are synced — for

- an allowed namespaced request, granted by the user's RoleBinding;
- a denied request (no rule matches: every binding naming the user's groups is visited
  and every rule of it tried);
- a node reading a Secret that a pod bound to it uses (the Node authorizer's graph);
- a system:masters request (decided before any cache is read);

warm (the user's rule set cached): median and p99 µs per decision over `--runs` decisions;
and cold: the first decision after an RBAC object changed (every cache emptied, as a real
write through the API empties it), median and p99 over `--changes` changes. A last line
times each user's first decision (the compiled ClusterRoles warm, the user's grants and
Role not yet). The goal of the security work: ≤ 50 µs for a cached rule set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from k8py.api.resources import Registry, builtin  # noqa: E402
from k8py.client.client import Client  # noqa: E402
from k8py.server.apiserver import app as apiserver  # noqa: E402
from k8py.server.apiserver.authn import TokenFile, User  # noqa: E402
from k8py.server.apiserver.authz import ALLOW, Attributes  # noqa: E402
from k8py.server.apiserver.inprocess import InProcessTransport  # noqa: E402
from k8py.server.daemon import bootstrap  # noqa: E402
from k8py.server.store import open_backend  # noqa: E402

RBAC = "rbac.authorization.k8s.io/v1"
NAMESPACES = builtin("v1", "namespaces")
PODS = builtin("v1", "pods")
ROLES = builtin(RBAC, "roles")
ROLE_BINDINGS = builtin(RBAC, "rolebindings")
CLUSTER_ROLES = builtin(RBAC, "clusterroles")
CLUSTER_ROLE_BINDINGS = builtin(RBAC, "clusterrolebindings")
PODS_PER_NODE = 10


def _binding(name: str, kind: str, role: str, user: str) -> dict:
    return {"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io",
                          "name": user}]}


async def populate(client: Client, users: int) -> None:
    """`users` users with their Roles and bindings, and the pods of `users / 2` nodes."""
    for i in range(users):
        namespace, user = f"team-{i:03}", f"user-{i:03}"
        await client.create(NAMESPACES, {"metadata": {"name": namespace}})
        await client.create(ROLES, {
            "metadata": {"name": "developer"},
            "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log", "services",
                                                        "configmaps"],
                       "verbs": ["get", "list", "watch", "create", "update", "delete"]},
                      {"apiGroups": ["apps"], "resources": ["deployments", "replicasets"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch"]}]},
            namespace=namespace)
        await client.create(ROLE_BINDINGS, _binding("developer", "Role", "developer", user),
                            namespace=namespace)
        if i % 4 == 0:
            await client.create(CLUSTER_ROLES, {
                "metadata": {"name": f"reader-{i:03}"},
                "rules": [{"apiGroups": [""], "resources": ["nodes", "namespaces"],
                           "verbs": ["get", "list", "watch"]}]})
            await client.create(CLUSTER_ROLE_BINDINGS, _binding(
                f"reader-{i:03}", "ClusterRole", f"reader-{i:03}", user))
    for node in range(users // 2):
        for j in range(PODS_PER_NODE):
            await client.create(PODS, {
                "metadata": {"name": f"web-{node:03}-{j}"},
                "spec": {"nodeName": f"node-{node:03}",
                         "containers": [{"name": "app", "image": "registry.example/app:1",
                                         "envFrom": [{"secretRef": {"name": f"s-{j}"}}]}],
                         "volumes": [{"name": "config",
                                      "configMap": {"name": f"config-{j}"}}]}},
                namespace=f"team-{node:03}")


async def caught_up(client: Client, authorization) -> None:
    """Until the authorizer's caches hold every RBAC object and pod the store has."""
    informers = {**{informer.resource: informer
                    for informer in authorization.policy.informers.values()},
                 PODS: authorization.graph.pods}
    deadline = time.monotonic() + 30
    for resource, informer in informers.items():
        stored = len((await client.list(resource))["items"])
        while len(informer) != stored:
            if time.monotonic() > deadline:
                raise SystemExit(f"the authorizer's {resource.plural} cache did not catch up")
            await asyncio.sleep(0.01)


def timed(authorizer, attributes: Attributes, runs: int) -> tuple[list[float], str]:
    decision = authorizer.authorize(attributes)[0]
    durations = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        authorizer.authorize(attributes)
        durations.append((time.perf_counter_ns() - start) / 1000)
    return durations, decision


def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))]


async def cold(client: Client, authorization, attributes: Attributes, changes: int
               ) -> list[float]:
    """The first decision after an RBAC write (an annotation on a ClusterRole of no one),
    once the authorizer's informer has it: all rule sets are recompiled."""
    informer = authorization.policy.informers["clusterroles"]
    role = await client.create(CLUSTER_ROLES, {"metadata": {"name": "bench-churn"}})
    durations = []
    for i in range(changes):
        role["metadata"]["annotations"] = {"bench/change": str(i)}
        role = await client.update(CLUSTER_ROLES, role)
        version = role["metadata"]["resourceVersion"]
        deadline = time.monotonic() + 10
        while (informer.get_by_name(None, "bench-churn") or {}).get(
                "metadata", {}).get("resourceVersion") != version:
            if time.monotonic() > deadline:
                raise SystemExit("the RBAC informer did not see a write within 10 s")
            await asyncio.sleep(0)
        start = time.perf_counter_ns()
        authorization.authorizer.authorize(attributes)
        durations.append((time.perf_counter_ns() - start) / 1000)
    return durations


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="k8py-authzbench-") as root:
        store = open_backend("memory://", root)
        await store.start()
        registry = Registry()
        await bootstrap(store, registry)
        tokens = TokenFile.ensure(os.path.join(root, "server", "cred", "tokens"),
                                  "system:admin", ("system:masters",))
        app = apiserver.make_app(store, tokens, registry,
                                 disable_admission_plugins=("ServiceAccount",))
        authorization = app[apiserver.AUTHORIZATION_KEY]
        client = Client(InProcessTransport(app[apiserver.REST_KEY]))
        started = time.perf_counter()
        await populate(client, args.users)
        await authorization.wait_ready()
        await caught_up(client, authorization)
        counts = {plural: len(informer)
                  for plural, informer in authorization.policy.informers.items()}
        print(f"authorization: modes {','.join(authorization.modes)}, "
              f"{', '.join(f'{n} {plural}' for plural, n in counts.items())}, "
              f"{len(authorization.graph.pods)} pods on {args.users // 2} nodes "
              f"(set up in {time.perf_counter() - started:.1f} s)")

        user = User("user-100", ())
        cases = {
            "allowed via RoleBinding": Attributes(
                user, "get", api_group="", api_version="v1", resource="pods",
                namespace="team-100", name="web-0"),
            "denied (no rule matches)": Attributes(
                user, "delete", api_group="", api_version="v1", resource="secrets",
                namespace="team-101", name="s-0"),
            "node reads its pod's secret": Attributes(
                User("system:node:node-042", ("system:nodes",)), "get", api_group="",
                api_version="v1", resource="secrets", namespace="team-042", name="s-7"),
            "system:masters": Attributes(
                User("system:admin", ("system:masters",)), "delete", api_group="apps",
                api_version="v1", resource="deployments", namespace="team-001", name="x"),
        }
        print(f"\n  {'one decision':<30} {'result':<8} {'warm median':>12} {'warm p99':>10}"
              f" {'cold median':>12} {'cold p99':>10}")
        for label, attributes in cases.items():
            warm, decision = timed(authorization.authorizer, attributes, args.runs)
            chilled = await cold(client, authorization, attributes, args.changes)
            await client.delete(CLUSTER_ROLES, "bench-churn")
            print(f"  {label:<30} {'allow' if decision == ALLOW else 'no':<8} "
                  f"{statistics.median(warm):9.1f} µs {p99(warm):7.1f} µs "
                  f"{statistics.median(chilled):9.1f} µs {p99(chilled):7.1f} µs")
        first, decisions = [], set()
        for i in range(args.users):  # each user's first request: a miss for that user only
            attributes = Attributes(User(f"user-{i:03}", ()), "list", api_version="v1",
                                    resource="pods", namespace=f"team-{i:03}")
            start = time.perf_counter_ns()
            decisions.add(authorization.authorizer.authorize(attributes)[0])
            first.append((time.perf_counter_ns() - start) / 1000)
        result = "allow" if decisions == {ALLOW} else "no"
        print(f"  {'a user first seen (miss)':<30} {result:<8} {'':>12} {'':>10} "
              f"{statistics.median(first):9.1f} µs {p99(first):7.1f} µs")
        await authorization.stop()
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20000,
                        help="decisions timed per case, warm")
    parser.add_argument("--changes", type=int, default=300,
                        help="RBAC writes per case, each followed by one timed decision")
    asyncio.run(main(parser.parse_args()))
