"""The EncryptionConfiguration file: upstream's validation messages, which resources a rule
names, reloads of a changed file (a broken one keeps the configuration in force), the file
`--secrets-encryption` generates, and the server's flags refusing a bad file in one line."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import subprocess
import sys

import pytest

from k8py.api.resources import builtin
from k8py.server.apiserver import encryptionconfig, keyrotation
from k8py.server.apiserver.encryptionconfig import ConfigError, Encryption

from tests.conftest import eventually

GOOD_KEY = base64.b64encode(b"k" * 32).decode()
HEADER = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"


def config(resources: str, providers: str = f"[{{aescbc: {{keys: [{{name: a, secret: "
                                             f"'{GOOD_KEY}'}}]}}}}]") -> str:
    return HEADER + f"resources:\n- resources: {resources}\n  providers: {providers}\n"


def error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        encryptionconfig.parse(text.encode(), "/etc/enc.yaml")
    return str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("", 'encryption provider configuration file "/etc/enc.yaml" is empty'),
    ("a: [1\n", "not valid YAML or JSON at line 2"),
    ("kind: Foo\napiVersion: v1\n", 'no kind "Foo" is registered for version "v1"'),
    (HEADER, "resources: Required value: at least one resources is required"),
    (HEADER + "resources: [{resources: [secrets]}]\n",
     "resources[0].providers: Required value: at least one resources[0].providers is "
     "required"),
    (config("[secrets]", "[{aescbc: {keys: [{name: a, secret: cGFzc3dvcmQK}]}}]"),
     'resources[0].providers[0].aescbc.keys[0].secret: Invalid value: "REDACTED": secret is '
     "not of the expected length, got 9, expected one of [16 24 32]"),
    (config("[secrets]", f"[{{secretbox: {{keys: [{{name: a, secret: "
                         f"'{base64.b64encode(b'x' * 16).decode()}'}}]}}}}]"),
     "secret is not of the expected length, got 16, expected one of [32]"),
    (config("[secrets]", "[{aesgcm: {keys: [{name: a, secret: '!!'}]}}]"),
     '.secret: Invalid value: "REDACTED": secrets must be base64 encoded'),
    (config("[secrets]", f"[{{aesgcm: {{keys: [{{secret: '{GOOD_KEY}'}}]}}}}]"),
     "aesgcm.keys[0].name: Required value: name is a mandatory field for a key"),
    (config("[secrets]", "[{aesgcm: {keys: []}}]"),
     "resources[0].providers[0].aesgcm.keys: Required value: at least one keys is required"),
    (config("[secrets]", "[{identity: {}, aescbc: {keys: []}}]"),
     "more than one provider specified in a single element"),
    (config("[secrets]", "[{}]"), "provider does not contain any of the expected providers: "
     "KMS, AESGCM, AESCBC, Secretbox, Identity"),
    (config("[secrets]", "[{aescbcc: {}}]"),
     'strict decoding error: unknown field "resources[0].providers[0].aescbcc"'),
    (config("[Secrets]"), 'resources[0].resources[0]: Invalid value: "Secrets": resource name '
     "should not contain capital letters"),
    (config("['*']"), "use '*.' to encrypt all the resources from core API group"),
    (config("[secrets, secrets]"), 'resources[0].resources: Invalid value: []string{"secrets", '
     '"secrets"}: the same resource cannot be specified multiple times'),
    (config("[secrets, '*.']"), "using overlapping resources such as 'secrets' and '*.'"),
    (config("[events.events.k8s.io]"), "Use 'events' instead in the config file"),
    (config("[secrets]", "[{kms: {name: x}}]"), "KMS providers are not supported"),
    (HEADER + "resources:\n- resources: ['*.']\n  providers: [identity: {}]\n"
     "- resources: [secrets]\n  providers: [identity: {}]\n",
     'resource "secrets" is masked by earlier rule "*."'),
])
def test_invalid_configurations_say_what_is_wrong_as_upstream(text, message):
    found = error(text)
    assert found.startswith("error while parsing file: ")
    assert message in found
    assert GOOD_KEY not in found


def test_several_problems_are_listed_together():
    found = error(config("[Secrets]", "[{aesgcm: {keys: []}}]"))
    assert found.startswith("error while parsing file: [resources[0].resources[0]: ")
    assert "capital letters, resources[0].providers[0].aesgcm.keys: Required value" in found


def test_json_is_accepted_too():
    document = {"kind": "EncryptionConfiguration", "apiVersion": "apiserver.config.k8s.io/v1",
                "resources": [{"resources": ["secrets"], "providers": [{"identity": {}}]}]}
    parsed = encryptionconfig.parse(json.dumps(document).encode())
    assert parsed.providers_for("", "secrets")[0].kind == "identity"


def test_exact_names_come_before_their_group_and_everything():
    parsed = encryptionconfig.parse((HEADER + f"""resources:
- resources: [secrets, deployments.apps]
  providers: [{{aesgcm: {{keys: [{{name: exact, secret: '{GOOD_KEY}'}}]}}}}]
- resources: ['*.apps']
  providers: [{{secretbox: {{keys: [{{name: group, secret: '{GOOD_KEY}'}}]}}}}]
- resources: ['*.*']
  providers: [{{aescbc: {{keys: [{{name: all, secret: '{GOOD_KEY}'}}]}}}}]
""").encode())
    def writes(api_version, plural):
        return parsed.transformer(builtin(api_version, plural)).writes_prefix
    assert writes("v1", "secrets") == b"k8s:enc:aesgcm:v1:exact:"
    assert writes("apps/v1", "deployments") == b"k8s:enc:aesgcm:v1:exact:"
    assert writes("apps/v1", "statefulsets") == b"k8s:enc:secretbox:v1:group:"
    assert writes("v1", "configmaps") == b"k8s:enc:aescbc:v1:all:"


def test_resources_not_named_are_stored_as_they_are():
    parsed = encryptionconfig.parse(config("[secrets]").encode())
    assert parsed.transformer(builtin("v1", "configmaps")) is None
    core_only = encryptionconfig.parse(config("['*.']").encode())
    assert core_only.transformer(builtin("v1", "configmaps")) is not None
    assert core_only.transformer(builtin("apps/v1", "deployments")) is None


def test_a_missing_file_is_named():
    with pytest.raises(ConfigError, match='error opening encryption provider configuration '
                                          'file "/nonexistent/enc.yaml"'):
        encryptionconfig.load("/nonexistent/enc.yaml")


async def test_a_changed_file_is_picked_up_and_a_broken_one_is_not(tmp_path, caplog):
    path = tmp_path / "enc.yaml"
    path.write_text(config("[secrets]"))
    live = Encryption.open(str(path))
    secrets = builtin("v1", "secrets")
    assert live.transformer(secrets).writes_prefix == b"k8s:enc:aescbc:v1:a:"
    follower = asyncio.create_task(live.follow(interval=0.02))
    try:
        path.write_text(config("[secrets]", "[identity: {}]"))
        await eventually(lambda: live.transformer(secrets).writes_prefix == b"",
                         what="the new configuration")
        path.write_text("kind: nonsense\n")
        await eventually(lambda: "not reloaded" in caplog.text, what="the refusal logged")
        assert live.transformer(secrets).writes_prefix == b""  # the last good one stays
    finally:
        follower.cancel()


def test_the_generated_file_is_k3s_layout_with_a_private_key(tmp_path):
    path = keyrotation.generated_path(str(tmp_path))
    assert keyrotation.ensure_generated(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path) as f:
        document = json.load(f)
    assert list(document) == ["kind", "apiVersion", "resources"]
    (rule,) = document["resources"]
    assert rule["resources"] == ["secrets"]
    (aescbc, identity) = rule["providers"]
    (key,) = aescbc["aescbc"]["keys"]
    assert key["name"] == "aescbckey" and len(base64.b64decode(key["secret"])) == 32
    assert identity == {"identity": {}}
    assert not keyrotation.ensure_generated(path)  # kept once written
    with open(path) as f:
        assert json.load(f) == document


@pytest.mark.parametrize("args, named", [
    (["--encryption-provider-config", "/nonexistent/enc.yaml"], "error opening encryption"),
    (["--encryption-provider-config", "BAD"], "secret is not of the expected length"),
    (["--encryption-provider-config", "GOOD", "--secrets-encryption"], "cannot be used together"),
])
def test_server_flags_refuse_a_bad_file_in_one_line(args, named, tmp_path):
    bad, good = tmp_path / "bad.yaml", tmp_path / "good.yaml"
    bad.write_text(config("[secrets]", "[{aescbc: {keys: [{name: a, secret: cGFzc3dvcmQK}]}}]"))
    good.write_text(config("[secrets]"))
    args = [{"BAD": str(bad), "GOOD": str(good)}.get(a, a) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "k8py", "server", *args, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
