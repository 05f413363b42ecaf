"""The CNI config k8py writes, run by the real Debian plugins (bridge, host-local, portmap) the
way containerd runs a conflist: ADD each plugin in order with the previous result, DEL in
reverse. Everything happens in two network namespaces the test creates: a "node" (where cni0,
the veth's host end and the iptables rules land) and a "pod" (the container's namespace). The
pod gets an address from the podCIDR, reaches its gateway, and a hostPort on the node reaches
a server in the pod through portmap. Root only."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
import time

import pytest

from k8py.net.cni import cni_config, write_cni_config

CNI_BIN = "/usr/lib/cni"
POD_CIDR = "10.244.7.0/24"
BUSYBOX = "/bin/busybox"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
    pytest.mark.skipif(not all(os.access(os.path.join(CNI_BIN, p), os.X_OK)
                               for p in ("bridge", "host-local", "portmap")),
                       reason="CNI plugins not installed"),
    pytest.mark.skipif(not os.access(BUSYBOX, os.X_OK), reason="busybox-static missing"),
]


def run(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30,
                          **kwargs)


@pytest.fixture
def namespaces():
    suffix = secrets.token_hex(3)
    node, pod = f"k8py-e2e-{suffix}", f"k8py-e2e-{suffix}-pod"
    run("ip", "netns", "add", node)
    try:
        run("ip", "netns", "add", pod)
        for ns in (node, pod):
            run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield node, pod
    finally:
        run("ip", "netns", "delete", pod, check=False)
        run("ip", "netns", "delete", node, check=False)


def invoke(node_ns: str, plugin: dict, conf: dict, command: str, container_id: str,
           netns_path: str, prev_result: dict | None = None,
           runtime_config: dict | None = None) -> dict:
    """One plugin call as libcni makes it (run inside the node's namespace)."""
    stdin = {**plugin, "name": conf["name"], "cniVersion": conf["cniVersion"]}
    if prev_result is not None:
        stdin["prevResult"] = prev_result
    capabilities = plugin.get("capabilities") or {}
    if runtime_config:
        stdin["runtimeConfig"] = {k: v for k, v in runtime_config.items()
                                  if capabilities.get(k)}
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns_path,
           "CNI_IFNAME": "eth0", "CNI_PATH": CNI_BIN,
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=cni-test"}
    proc = subprocess.run(["ip", "netns", "exec", node_ns, os.path.join(CNI_BIN, plugin["type"])],
                          input=json.dumps(stdin), capture_output=True, text=True, env=env,
                          timeout=30)
    if proc.returncode != 0:
        raise AssertionError(f"{plugin['type']} {command} failed: {proc.stdout} {proc.stderr}")
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def wait_for(predicate, timeout: float = 10.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def test_conflist_runs_with_the_debian_plugins(namespaces, tmp_path):
    node_ns, pod_ns = namespaces
    conf_dir, ipam_dir = tmp_path / "net.d", tmp_path / "cni" / "networks"
    write_cni_config(str(conf_dir), POD_CIDR, ipam_data_dir=str(ipam_dir))
    conf = json.loads((conf_dir / "10-k8py.conflist").read_text())
    assert conf == cni_config(POD_CIDR, ipam_data_dir=str(ipam_dir))
    container_id = "e2e" + secrets.token_hex(8)
    netns_path = f"/run/netns/{pod_ns}"
    runtime_config = {"portMappings": [{"hostPort": 18080, "containerPort": 8080,
                                        "protocol": "tcp"}]}
    server = None
    result = None
    try:
        for plugin in conf["plugins"]:
            result = invoke(node_ns, plugin, conf, "ADD", container_id, netns_path,
                            prev_result=result, runtime_config=runtime_config)
        subnet = ipaddress.ip_network(POD_CIDR)
        address = ipaddress.ip_interface(result["ips"][0]["address"])
        gateway = ipaddress.ip_address(result["ips"][0]["gateway"])
        assert address.ip in subnet and address.network == subnet
        assert gateway == next(subnet.hosts())  # host-local's default gateway: .1
        assert (ipam_dir / "k8py" / str(address.ip)).exists()

        shown = run("ip", "netns", "exec", pod_ns, "ip", "-j", "addr", "show", "eth0").stdout
        assert str(address.ip) in shown
        routes = run("ip", "netns", "exec", pod_ns, "ip", "route").stdout
        assert f"default via {gateway}" in routes
        bridge = json.loads(run("ip", "netns", "exec", node_ns, "ip", "-j", "addr", "show",
                                "cni0").stdout)
        assert any(a["local"] == str(gateway) for a in bridge[0]["addr_info"])

        run("ip", "netns", "exec", pod_ns, BUSYBOX, "ping", "-c", "1", "-W", "2", str(gateway))

        # hostPort: a server in the pod answers on the node's address at the host port.
        www = tmp_path / "www"
        www.mkdir()
        (www / "index.html").write_text("hello from the pod\n")
        server = subprocess.Popen(["ip", "netns", "exec", pod_ns, sys.executable, "-m",
                                   "http.server", "--bind", "0.0.0.0", "--directory", str(www),
                                   "8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fetch = ("import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("
                 f"'http://{gateway}:18080/index.html', timeout=2).read().decode())")

        def fetched() -> bool:
            proc = run("ip", "netns", "exec", node_ns, sys.executable, "-c", fetch, check=False)
            return proc.returncode == 0 and proc.stdout == "hello from the pod\n"
        wait_for(fetched, what="the hostPort reaches the pod's server")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        for plugin in reversed(conf["plugins"]):
            invoke(node_ns, plugin, conf, "DEL", container_id, netns_path,
                   prev_result=result, runtime_config=runtime_config)
    assert not (ipam_dir / "k8py" / str(address.ip)).exists()
    links = run("ip", "netns", "exec", pod_ns, "ip", "link", "show").stdout
    assert "eth0" not in links
    shutil.rmtree(tmp_path / "cni", ignore_errors=True)
