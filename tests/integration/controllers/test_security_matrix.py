"""The security issue's acceptance matrix: identities × sensitive actions, each answer as
upstream's (RBAC, the Node authorizer, NodeRestriction, escalation checks), through real
kubectl with each identity's own credentials. The table is printed.

Identities: anonymous (no credentials: raw HTTPS, kubectl would prompt), the admin (system:masters), `dev` bound to `edit`
in `team`, `boss` bound to `admin` in `team`, the service account `team/robot` (bound to
nothing), the node `sim-node-0` (whose pod uses the Secret `used`) and a second node
`sim-node-1`; each with a client certificate from the cluster CA or a bearer token, as
real clients have them. `edit` and `admin` are aggregated roles: the ClusterRole
aggregation controller fills them, as upstream's.
"""

from __future__ import annotations

import base64
import os
import ssl

import aiohttp
import yaml
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography import x509

from k8py import certificates
from k8py.api.resources import builtin
from k8py.server import pki
from tests.conftest import eventually

NAMESPACES = builtin("v1", "namespaces")
SECRETS = builtin("v1", "secrets")
PODS = builtin("v1", "pods")
SERVICE_ACCOUNTS = builtin("v1", "serviceaccounts")
ROLE_BINDINGS = builtin("rbac.authorization.k8s.io/v1", "rolebindings")
CLUSTER_ROLES = builtin("rbac.authorization.k8s.io/v1", "clusterroles")
REVIEWS = builtin("authorization.k8s.io/v1", "subjectaccessreviews")

ACTIONS = {
    "read secrets of another namespace": ("get", "secrets", "-n", "other"),
    "bind cluster-admin": ("create", "clusterrolebinding", "grab", "--clusterrole",
                           "cluster-admin", "--user", "mallory"),
    "exec into a pod": ("exec", "web", "-n", "team", "--", "true"),
    "patch another node": ("label", "node", "sim-node-2", "pwned=yes"),
    "read a secret no pod of the node uses": ("get", "secret", "unused", "-n", "team"),
    "read the secret its pod uses": ("get", "secret", "used", "-n", "team"),
    "escalate a Role": ("create", "role", "everything", "-n", "team", "--verb=*",
                        "--resource=*.*"),
}

# upstream's answers: 401 unauthenticated, 403 refused, ok (authorized: exec then fails
# further on, the simulated node runs no container)
EXPECTED = {
    "anonymous": {action: "401" for action in ACTIONS},
    "admin": {action: "ok" for action in ACTIONS},
    "dev (edit in team)": {
        "read secrets of another namespace": "403", "bind cluster-admin": "403",
        "exec into a pod": "ok", "patch another node": "403",
        "read a secret no pod of the node uses": "ok", "read the secret its pod uses": "ok",
        "escalate a Role": "403"},
    "boss (admin in team)": {
        "read secrets of another namespace": "403", "bind cluster-admin": "403",
        "exec into a pod": "ok", "patch another node": "403",
        "read a secret no pod of the node uses": "ok", "read the secret its pod uses": "ok",
        "escalate a Role": "403"},
    "service account team/robot": {action: "403" for action in ACTIONS},
    "node sim-node-0": {**{action: "403" for action in ACTIONS},
                        "read the secret its pod uses": "ok"},
    "node sim-node-1": {action: "403" for action in ACTIONS},
}


def _kubeconfig(admin_path: str, path: str, user: dict) -> str:
    with open(admin_path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["users"][0]["user"] = user
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    os.chmod(path, 0o600)
    return path


def _certificate_user(certs: pki.PKI, name: str, groups: tuple[str, ...] = ()) -> dict:
    signer = pki.signer(certs)
    key = certificates.new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups] +
                        [x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = pki.issue(subject, key, signer.cert, signer.key,
                     validity=certificates.leaf_validity(),
                     usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
    return {"client-certificate-data": base64.b64encode(certificates.pem(cert)).decode(),
            "client-key-data": base64.b64encode(certificates.key_pem(key)).decode()}


def _outcome(proc) -> str:
    if proc.returncode == 0:
        return "ok"
    if "(Unauthorized)" in proc.stderr:
        return "401"
    if "(Forbidden)" in proc.stderr or " is forbidden: " in proc.stderr:
        return "403"
    return "ok"  # past authorization: the simulated node has no container to exec in


# what each action sends, for the anonymous client (kubectl without credentials would
# prompt for a password)
REQUESTS = {
    "read secrets of another namespace": ("GET", "/api/v1/namespaces/other/secrets"),
    "bind cluster-admin": ("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"),
    "exec into a pod": ("POST", "/api/v1/namespaces/team/pods/web/exec?command=true"),
    "patch another node": ("PATCH", "/api/v1/nodes/sim-node-2"),
    "read a secret no pod of the node uses": ("GET", "/api/v1/namespaces/team/secrets/unused"),
    "read the secret its pod uses": ("GET", "/api/v1/namespaces/team/secrets/used"),
    "escalate a Role": ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/team/roles"),
}


async def _anonymous(url: str, ca_file: str) -> dict[str, str]:
    context = ssl.create_default_context(cafile=ca_file)
    answers = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for action, (method, path) in REQUESTS.items():
            async with session.request(method, url + path, json={}) as response:
                answers[action] = "ok" if response.status < 400 else str(response.status)
    return answers


async def _bind(client, namespace: str, name: str, role: str, subject: dict) -> None:
    await client.create(ROLE_BINDINGS, {
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role},
        "subjects": [subject]})


async def test_identities_by_sensitive_actions(cluster, tmp_path):
    client = cluster.client
    certs = pki.paths(os.path.join(cluster.home, "data", "server"))
    for namespace in ("team", "other"):
        await client.create(NAMESPACES, {"metadata": {"name": namespace}})
    for namespace, name in (("team", "used"), ("team", "unused"), ("other", "theirs")):
        await client.create(SECRETS, {"metadata": {"name": name, "namespace": namespace},
                                      "stringData": {"k": "v"}})
    await eventually(lambda: _exists(client, SERVICE_ACCOUNTS, "team", "default"), 10,
                     what="the default ServiceAccount of team")
    await client.create(SERVICE_ACCOUNTS, {"metadata": {"name": "robot", "namespace": "team"}})
    await client.create(PODS, {"metadata": {"name": "web", "namespace": "team"}, "spec": {
        "nodeName": "sim-node-0", "containers": [{"name": "c", "image": "busybox"}],
        "volumes": [{"name": "s", "secret": {"secretName": "used"}}]}})
    await _bind(client, "team", "dev-edit", "edit", {"kind": "User", "name": "dev"})
    await _bind(client, "team", "boss-admin", "admin", {"kind": "User", "name": "boss"})

    async def edit_aggregated() -> bool:
        role = await client.get(CLUSTER_ROLES, "edit")
        return bool(role.get("rules"))

    await eventually(edit_aggregated, 10, what="edit filled by the aggregation controller")
    token = (await client.create_subresource(SERVICE_ACCOUNTS, "robot", "team", "token", {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {}}))["status"]["token"]

    admin = cluster.kubeconfig
    kubeconfigs = {
        "admin": admin,
        "dev (edit in team)": _kubeconfig(admin, str(tmp_path / "dev"),
                                          _certificate_user(certs, "dev")),
        "boss (admin in team)": _kubeconfig(admin, str(tmp_path / "boss"),
                                            _certificate_user(certs, "boss")),
        "service account team/robot": _kubeconfig(admin, str(tmp_path / "robot"),
                                                  {"token": token}),
        "node sim-node-0": _kubeconfig(admin, str(tmp_path / "node0"), _certificate_user(
            certs, "system:node:sim-node-0", ("system:nodes",))),
        "node sim-node-1": _kubeconfig(admin, str(tmp_path / "node1"), _certificate_user(
            certs, "system:node:sim-node-1", ("system:nodes",))),
    }
    # the bindings and the pod have reached the authorizers' caches
    await eventually(lambda: _allowed(client, "boss", "create", "roles", "team",
                                      group="rbac.authorization.k8s.io"), 10,
                     what="boss's binding in effect")
    await eventually(lambda: _allowed(client, "system:node:sim-node-0", "get", "secrets",
                                      "team", "used", ("system:nodes",)), 10,
                     what="the node graph to know the pod")

    with open(admin, encoding="utf-8") as f:
        url = yaml.safe_load(f)["clusters"][0]["cluster"]["server"]
    observed: dict[str, dict[str, str]] = {"anonymous": await _anonymous(url, cluster.ca_file)}
    stderr: dict[tuple[str, str], str] = {}
    for identity, kubeconfig in kubeconfigs.items():
        observed[identity] = {}
        for action, args in ACTIONS.items():
            proc = await cluster.akubectl("--kubeconfig", kubeconfig, *args, check=False)
            observed[identity][action] = _outcome(proc)
            stderr[identity, action] = proc.stderr.strip()
            if action == "bind cluster-admin" and proc.returncode == 0:
                await cluster.akubectl("delete", "clusterrolebinding", "grab")
            if action == "escalate a Role" and proc.returncode == 0:
                await cluster.akubectl("delete", "role", "everything", "-n", "team")
            if action == "patch another node" and proc.returncode == 0:
                await cluster.akubectl("label", "node", "sim-node-2", "pwned-")
    _print_table(observed)
    assert observed == EXPECTED

    # and the refusals say what upstream says
    assert stderr["node sim-node-0", "read a secret no pod of the node uses"] == (
        'Error from server (Forbidden): secrets "unused" is forbidden: User '
        '"system:node:sim-node-0" cannot get resource "secrets" in API group "" in the '
        "namespace \"team\": no relationship found between node 'sim-node-0' and this object")
    assert stderr["node sim-node-0", "patch another node"] == (
        'Error from server (Forbidden): nodes "sim-node-2" is forbidden: node "sim-node-0" '
        'is not allowed to modify node "sim-node-2"')
    assert stderr["dev (edit in team)", "read secrets of another namespace"] == (
        'Error from server (Forbidden): secrets is forbidden: User "dev" cannot list '
        'resource "secrets" in API group "" in the namespace "other"')
    assert stderr["boss (admin in team)", "escalate a Role"].startswith(
        'Error from server (Forbidden): roles.rbac.authorization.k8s.io "everything" is '
        'forbidden: user "boss" (groups=["system:authenticated"]) is attempting to grant '
        "RBAC permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], "
        'Verbs:["*"]}'), stderr["boss (admin in team)", "escalate a Role"]
    assert stderr["dev (edit in team)", "bind cluster-admin"] == (
        "error: failed to create clusterrolebinding: clusterrolebindings.rbac.authorization."
        'k8s.io is forbidden: User "dev" cannot create resource "clusterrolebindings" in API '
        'group "rbac.authorization.k8s.io" at the cluster scope')

    # kubectl auth can-i: as the admin impersonating, and as the user itself
    can_i = await cluster.akubectl("auth", "can-i", "create", "pods/exec", "-n", "team",
                                   "--as", "dev")
    assert can_i.stdout.strip() == "yes"
    can_i = await cluster.akubectl("auth", "can-i", "get", "secrets", "-n", "other",
                                   "--as", "dev", check=False)
    assert (can_i.returncode, can_i.stdout.strip()) == (1, "no")
    listing = await cluster.akubectl("--kubeconfig", kubeconfigs["dev (edit in team)"],
                                     "auth", "can-i", "--list", "-n", "team")
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["Resources", "Non-Resource", "URLs", "Resource", "Names",
                                "Verbs"]
    assert any(line.split()[0] == "pods/exec" and "create" in line for line in lines)
    assert not any(line.split()[0] in ("roles.rbac.authorization.k8s.io",
                                       "clusterrolebindings.rbac.authorization.k8s.io")
                   for line in lines[1:])
    # impersonation is itself authorized
    denied = await cluster.akubectl("--kubeconfig", kubeconfigs["dev (edit in team)"],
                                    "get", "pods", "-n", "team", "--as", "boss", check=False)
    assert denied.stderr.strip() == (
        'Error from server (Forbidden): users "boss" is forbidden: User "dev" cannot '
        'impersonate resource "users" in API group "" at the cluster scope')
    whoami = await cluster.akubectl("auth", "whoami", "--as", "system:serviceaccount:team:robot",
                                    "-o", "jsonpath={.status.userInfo.groups}")
    assert whoami.stdout == ('["system:serviceaccounts","system:serviceaccounts:team",'
                             '"system:authenticated"]')


async def _exists(client, resource, namespace: str, name: str) -> bool:
    try:
        await client.get(resource, name, namespace)
        return True
    except Exception:
        return False


async def _allowed(client, user: str, verb: str, resource: str, namespace: str,
                   name: str = "", groups: tuple[str, ...] = (), group: str = "") -> bool:
    review = await client.create(REVIEWS, {"spec": {
        "user": user, "groups": list(groups), "resourceAttributes": {
            "verb": verb, "group": group, "resource": resource, "namespace": namespace,
            "name": name}}})
    return review["status"]["allowed"]


def _print_table(observed: dict[str, dict[str, str]]) -> None:
    actions = list(ACTIONS)
    width = max(len(identity) for identity in observed)
    print()
    print("identity".ljust(width), *(f"[{i + 1}]" for i in range(len(actions))), sep="  ")
    for identity, row in observed.items():
        print(identity.ljust(width), *(row[a].ljust(3) for a in actions), sep="  ")
    for i, action in enumerate(actions):
        print(f"[{i + 1}] {action}")
