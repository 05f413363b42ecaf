"""The deploy controller against a real API server: files dropped into the manifests
directory appear in the cluster, edits follow, a broken file gets an Event while the others
stay applied, `.skip` and `--disable` as k3s's. Objects are read back over HTTPS."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.client.client import Client
from k8py.client.http import HttpTransport
from k8py.server import pki
from k8py.server.apiserver import app as apiserver
from k8py.server.apiserver.authz import API_SERVER
from k8py.server.apiserver.inprocess import InProcessTransport
from k8py.server.deploy import Deployer
from tests.conftest import eventually, wait_for
from tests.integration.inloop import running_apiserver

CONFIGMAPS = builtin("v1", "configmaps")
EVENTS = builtin("v1", "events")
NAMESPACES = builtin("v1", "namespaces")
SERVICES = builtin("v1", "services")


def configmap(name: str, value: str, namespace: str = "default") -> str:
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
            f"  namespace: {namespace}\ndata:\n  value: {value!r}\n")


def write(path, text: str) -> None:
    """Replace a file at once (a new inode, as editors do): never seen half written."""
    partial = str(path) + ".partial"
    with open(partial, "w") as f:
        f.write(text)
    os.replace(partial, path)
    # a rewrite within the same clock tick may keep the mtime: move it on explicitly
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@contextlib.asynccontextmanager
async def deploying(tmp_path, disables=(), prepare=None):
    async with running_apiserver(tmp_path) as server:
        directory = os.path.join(server.data_dir, "server", "manifests")
        os.makedirs(directory, exist_ok=True)
        if prepare:
            prepare(directory)
        kubeconfig = str(tmp_path / "kubeconfig.yaml")
        pki.write_kubeconfig(server.certs, kubeconfig, server.url, 0o600)
        client = Client(HttpTransport.from_kubeconfig(kubeconfig))
        rest = server.app[apiserver.REST_KEY]
        deployer = Deployer(Client(InProcessTransport(rest, "k8py-deploy", API_SERVER)),
                            rest.registry, directory, disables, interval=0.1)
        task = asyncio.create_task(deployer.run())
        try:
            yield client, directory
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()


async def value_of(client: Client, name: str, namespace: str = "default"):
    try:
        return (await client.get(CONFIGMAPS, name, namespace))["data"]["value"]
    except errors.NotFound:
        return None


async def addon_events(client: Client, addon: str) -> list[dict]:
    listed = await client.list(EVENTS, "kube-system")
    return [e for e in listed["items"] if e["involvedObject"]["kind"] == "Addon"
            and e["involvedObject"]["name"] == addon]


async def test_dropped_manifest_appears_and_follows_edits(tmp_path):
    async with deploying(tmp_path) as (client, directory):
        write(os.path.join(directory, "app.yaml"),
              "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n"
              + configmap("settings", "one", "shop") + "---\n" + configmap("extra", "x", "shop"))
        await eventually(lambda: value_of(client, "settings", "shop"), timeout=10,
                         what="the dropped manifest's ConfigMap")
        assert await value_of(client, "extra", "shop") == "x"
        cm = await client.get(CONFIGMAPS, "settings", "shop")
        assert {m["manager"] for m in cm["metadata"]["managedFields"]} == {"k8py-deploy:app"}

        # the Addon: source and checksum of what was applied, the objects it holds
        listed = await client.transport.call("GET", _addon_ref("app"))
        assert listed["spec"]["source"] == os.path.join(directory, "app.yaml")
        assert len(listed["spec"]["checksum"]) == 64
        assert {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop",
                "name": "extra"} in listed["status"]["objects"]

        # an edit: the value follows; an object dropped from the file is deleted (k3s's)
        write(os.path.join(directory, "app.yaml"),
              "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n"
              + configmap("settings", "two", "shop"))
        await eventually(lambda: _equals(value_of(client, "settings", "shop"), "two"),
                         timeout=10, what="the edit applied")
        await eventually(lambda: _equals(value_of(client, "extra", "shop"), None), timeout=10,
                         what="the object removed from the file deleted")
        reasons = [e["reason"] for e in await addon_events(client, "app")]
        assert "AppliedManifest" in reasons and "ApplyingManifest" in reasons


async def test_broken_file_gets_an_event_and_the_others_stay_applied(tmp_path):
    async with deploying(tmp_path) as (client, directory):
        write(os.path.join(directory, "good.yaml"), configmap("good", "ok"))
        write(os.path.join(directory, "broken.yaml"), "apiVersion: v1\nkind: [unclosed\n")
        write(os.path.join(directory, "rejected.json"),
              '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}')
        write(os.path.join(directory, "unknown.yml"),
              "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n")
        await eventually(lambda: value_of(client, "good", "default"), timeout=10,
                         what="the good file applied")

        async def warned(addon, reason):
            return [e for e in await addon_events(client, addon)
                    if e["reason"] == reason and e["type"] == "Warning"]
        parse = await eventually(lambda: warned("broken", "ParseManifestFailed"), timeout=10)
        assert parse[0]["source"]["component"] == "deploy"
        assert parse[0]["message"].startswith(
            f'Parse manifest at "{os.path.join(directory, "broken.yaml")}" failed: ')
        rejected = await eventually(lambda: warned("rejected", "ApplyManifestFailed"),
                                    timeout=10)
        assert "Bad_Name" in rejected[0]["message"]
        unknown = await eventually(lambda: warned("unknown", "ApplyManifestFailed"),
                                   timeout=10)
        assert 'no matches for kind "Widget" in version "example.com/v1"' \
            in unknown[0]["message"]

        # a failure that may pass (a namespace missing yet) is tried again, unchanged
        write(os.path.join(directory, "later.yaml"), configmap("later", "l", "later-ns"))
        await eventually(lambda: warned("later", "ApplyManifestFailed"), timeout=10)
        await client.create(NAMESPACES, {"metadata": {"name": "later-ns"}})
        await eventually(lambda: value_of(client, "later", "later-ns"), timeout=10,
                         what="the failed file tried again")

        # fixed, the broken file is applied; the good one was never disturbed
        write(os.path.join(directory, "broken.yaml"), configmap("mended", "yes"))
        await eventually(lambda: value_of(client, "mended"), timeout=10, what="the fix")
        assert await value_of(client, "good") == "ok"


async def test_skip_file_leaves_a_manifest_alone(tmp_path):
    async with deploying(tmp_path) as (client, directory):
        path = os.path.join(directory, "tuned.yaml")
        write(path, configmap("tuned", "packaged"))
        await eventually(lambda: value_of(client, "tuned"), timeout=10)
        write(path + ".skip", "")
        write(path, configmap("tuned", "ignored"))
        write(os.path.join(directory, "marker.yaml"), configmap("marker", "m"))
        # once a later file is applied, a scan has passed over the skipped one
        await eventually(lambda: value_of(client, "marker"), timeout=10)
        await eventually(lambda: value_of(client, "marker"), timeout=10)
        assert await value_of(client, "tuned") == "packaged"
        os.remove(path + ".skip")
        await eventually(lambda: _equals(value_of(client, "tuned"), "ignored"), timeout=10,
                         what="applied again once the .skip is gone")


async def test_disable_removes_the_file_its_objects_and_its_addon(tmp_path):
    def prepare(directory):
        # k3s's packaged add-on names: a file, and a subdirectory
        os.makedirs(os.path.join(directory, "ingress"))
        write(os.path.join(directory, "ingress", "controller.yaml"), configmap("ing", "i"))
        write(os.path.join(directory, "metrics-server.yaml"), configmap("metrics", "m"))
        write(os.path.join(directory, "keep.yaml"), configmap("keep", "k"))

    async with running_apiserver(tmp_path) as server:
        rest = server.app[apiserver.REST_KEY]
        client = Client(InProcessTransport(rest))
        directory = os.path.join(server.data_dir, "server", "manifests")
        prepare(directory)
        deployer = Deployer(Client(InProcessTransport(rest, "k8py-deploy", API_SERVER)),
                            rest.registry, directory)
        await deployer.ensure_crd()
        await deployer.sync(force=True)
        assert await value_of(client, "metrics") == "m"
        assert await value_of(client, "ing") == "i"
        disabling = Deployer(deployer.client, rest.registry, directory,
                             ("metrics-server", "ingress"))
        await disabling.sync(force=True)
        assert await value_of(client, "metrics") is None
        assert await value_of(client, "ing") is None
        assert await value_of(client, "keep") == "k"
        assert sorted(os.listdir(directory)) == ["ingress", "keep.yaml"]
        assert os.listdir(os.path.join(directory, "ingress")) == []
        with pytest.raises(errors.NotFound):
            await client.transport.call("GET", _addon_ref("metrics-server"))
        reasons = [e["reason"] for e in await addon_events(client, "metrics-server")]
        assert "DeletingManifest" in reasons


def _addon_ref(name: str):
    from k8py.client.client import Ref
    from k8py.api.resources import Resource
    return Ref(Resource("k8py.io", "v1", "Addon", "addons", True, custom=True),
               "kube-system", name)


async def _equals(awaitable, expected) -> bool:
    return (await awaitable) == expected


def test_server_process_deploys_and_disable_removes(tmp_path):
    """`k8py server` runs the deploy controller; a restart with `--disable` (comma-separated,
    k3s's form) deletes that add-on's objects and file, and leaves the others."""
    import signal

    from tests.integration.test_server_process import start_server, wait_for_line

    directory = tmp_path / "server" / "manifests"
    directory.mkdir(parents=True)
    write(directory / "first.yaml", configmap("first", "1"))
    write(directory / "second.yaml", configmap("second", "2"))
    flags = ("--disable-agent", "--disable-scheduler", "--disable-controller-manager")
    kubeconfig = str(tmp_path / "kubeconfig.yaml")

    async def values() -> tuple:
        client = Client(HttpTransport.from_kubeconfig(kubeconfig))
        try:
            return (await value_of(client, "first"), await value_of(client, "second"))
        finally:
            await client.close()

    async def dns_service() -> dict | None:
        client = Client(HttpTransport.from_kubeconfig(kubeconfig))
        try:
            return await client.get(SERVICES, "kube-dns", "kube-system")
        except errors.NotFound:
            return None
        finally:
            await client.close()

    proc = start_server(tmp_path, *flags)
    try:
        wait_for_line(proc, f"applied manifest {directory / 'second.yaml'}", timeout=60)
        assert asyncio.run(values()) == ("1", "2")
        # the packaged coredns add-on: the cluster DNS Service at --cluster-dns
        service = wait_for(lambda: asyncio.run(dns_service()), timeout=30,
                           what="the kube-dns Service")
        assert service["spec"]["clusterIP"] == "10.43.0.10"
        assert service["metadata"]["labels"]["k8s-app"] == "kube-dns"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
    proc = start_server(tmp_path, *flags, "--disable", "second,traefik,coredns")
    try:
        wait_for_line(proc, "add-on second disabled", timeout=60)
        assert asyncio.run(values()) == ("1", None)
        wait_for(lambda: asyncio.run(dns_service()) is None, timeout=30,
                 what="the kube-dns Service removed with its add-on")
        # the packaged add-ons (local-storage, ingress, metrics-server; not coredns) are
        # staged beside the user's file
        assert sorted(os.listdir(directory)) == ["first.yaml", "ingress.yaml",
                                                 "local-storage.yaml", "metrics-server.yaml"]
    finally:
        proc.kill()
        proc.wait()
