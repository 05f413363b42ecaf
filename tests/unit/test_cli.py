"""The CLI's configuration: flag > K8PY_* environment > config file > default, and one-line
usage errors with exit code 2. The server's daemon is swapped for a recorder here: what is
under test is which configuration reaches it, not the daemon (tests/integration runs that)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest
from click.testing import CliRunner

from k8py import cli as cli_module
from k8py.server import daemon


@pytest.fixture
def received(monkeypatch):
    configs = []

    async def record(config):
        configs.append(config)

    monkeypatch.setattr(daemon, "run", record)
    monkeypatch.delenv("K8PY_CONFIG", raising=False)
    return configs


def run(args, env=None):
    return CliRunner().invoke(cli_module.cli, args, env=env or {}, catch_exceptions=False)


def test_defaults_are_k3s_like(received, tmp_path):
    result = run(["server", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (config,) = received
    assert config.https_listen_port == 6443
    assert config.cluster_cidr == ipaddress.ip_network("10.42.0.0/16")
    assert config.service_cidr == ipaddress.ip_network("10.43.0.0/16")
    assert config.cluster_dns == ipaddress.ip_address("10.43.0.10")
    assert config.cluster_domain == "cluster.local"
    assert config.write_kubeconfig == "/etc/k8py/k8py.yaml"
    assert config.write_kubeconfig_mode == 0o600
    assert config.disable_agent is False
    assert config.service_node_port_range == (30000, 32767)


def test_service_node_port_range_from_flag_env_and_file(received, tmp_path):
    assert run(["server", "--data-dir", str(tmp_path),
                "--service-node-port-range", "31000-31999"]).exit_code == 0
    assert run(["server", "--data-dir", str(tmp_path)],
               {"K8PY_SERVICE_NODE_PORT_RANGE": "20000-20010"}).exit_code == 0
    config_file = tmp_path / "config.yaml"
    config_file.write_text("service-node-port-range: 30500-30600\n")
    assert run(["server", "-c", str(config_file), "--data-dir", str(tmp_path)]).exit_code == 0
    assert [c.service_node_port_range for c in received] == [
        (31000, 31999), (20000, 20010), (30500, 30600)]


def test_precedence_flag_over_env_over_file_over_default(received, tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "https-listen-port: 7000\n"
        "cluster-domain: file.local\n"
        "node-name: from-file\n"
        "disable-agent: true\n"
        "tls-san: [a.example.com, 10.0.0.5]\n"
        "write-kubeconfig-mode: '0644'\n"
    )
    env = {"K8PY_HTTPS_LISTEN_PORT": "7001", "K8PY_CLUSTER_DOMAIN": "env.local"}
    result = run(
        ["server", "-c", str(config_file), "--data-dir", str(tmp_path),
         "--https-listen-port", "7002"],
        env,
    )
    assert result.exit_code == 0, result.output
    (config,) = received
    assert config.https_listen_port == 7002  # flag beats env and file
    assert config.cluster_domain == "env.local"  # env beats file
    assert config.node_name == "from-file"  # file beats default
    assert config.disable_agent is True
    assert config.tls_san == ("a.example.com", "10.0.0.5")
    assert config.write_kubeconfig_mode == 0o644
    assert config.bind_address == ipaddress.ip_address("0.0.0.0")  # default


def test_config_file_from_environment(received, tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("data-dir: /srv/k8py\n")
    assert run(["server"], {"K8PY_CONFIG": str(config_file)}).exit_code == 0
    assert received[0].data_dir == "/srv/k8py"


@pytest.mark.parametrize(
    "args, named",
    [
        (["server", "--no-such-flag"], "--no-such-flag"),
        (["server", "--https-listen-port", "70000"], "--https-listen-port"),
        (["server", "--cluster-cidr", "10.42.0.0/33"], "--cluster-cidr"),
        (["server", "--cluster-cidr", "10.42.0.1/16"], "--cluster-cidr"),
        (["server", "--cluster-dns", "not-an-ip"], "--cluster-dns"),
        (["server", "--cluster-dns", "10.99.0.10"], "--cluster-dns"),
        (["server", "--service-cidr", "fd00::/112"], "--service-cidr"),
        (["server", "--service-node-port-range", "30000"], "--service-node-port-range"),
        (["server", "--service-node-port-range", "32767-30000"], "--service-node-port-range"),
        (["server", "--service-node-port-range", "30000-70000"], "--service-node-port-range"),
        (["server", "--service-node-port-range", "0-100"], "--service-node-port-range"),
        (["server", "--service-node-port-range", "a-b"], "--service-node-port-range"),
        (["server", "--node-name", "Bad_Name"], "--node-name"),
        (["server", "--write-kubeconfig-mode", "0999"], "--write-kubeconfig-mode"),
        (["server", "--datastore-endpoint", "postgres://db"], "--datastore-endpoint"),
        (["server", "--datastore-endpoint", "sqlite://?bogus=1"], "--datastore-endpoint"),
        (["agent", "--token", "x"], "--server"),
        (["agent", "--server", "https://10.0.0.1:6443"], "--token"),
        (["agent", "--server", "https://10.0.0.1:6443", "--token", "bad:form"], "--token"),
        (["agent", "--server", "https://10.0.0.1:6443", "--token", "K10" + "0" * 64],
         "--token"),
        (["agent", "--simulate", "2", "--server", "https://x", "--token", "bad:form"], "--token"),
        (["agent", "--server", "10.0.0.1:6443", "--token", f"K10{'0' * 64}::server:s"],
         "--server"),
        (["agent", "--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig"),
        (["agent", "--kubeconfig", "/etc/hostname"], "--kubeconfig"),
        (["agent", "--kubeconfig", "x", "--node-label", "novalue"], "--node-label"),
    ],
)
def test_bad_flags_are_one_line_errors_with_exit_2(args, named, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "k8py", *args, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert named in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        ("https-listen-port: [1, 2\n", "invalid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("no-such-key: 1\n", "unknown key 'no-such-key'"),
        ("disable-agent: maybe\n", "true or false"),
        ("https-listen-port: {a: 1}\n", "single value"),
        ("write-kubeconfig-mode: 644\n", "quoted"),
    ],
)
def test_bad_config_files_are_one_line_errors(content, message, tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "k8py", "server", "--config", str(config_file),
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr


def test_version():
    result = run(["--version"])
    assert result.exit_code == 0
    assert "v1.32" in result.output and "k8py" in result.output
