"""Secrets encrypted at rest, on a real API server over a SQLite store: the database and WAL
files never hold a Secret's value (and do without encryption, so the check can fail); reads,
lists and watches see the plaintext; `k8py secrets-encrypt` (the real command, as a process)
rotates the key through prepare, rotate and reencrypt while a writer keeps writing, and no
write is lost; a changed configuration file is picked up by the running server; a value no
key opens is a 500 as upstream's; the endpoints are for system:masters only."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import stat
import sys

import aiohttp
import pytest

from k8py.api import errors
from k8py.api.resources import builtin
from k8py.server import pki
from k8py.server.apiserver import keyrotation
from k8py.server.apiserver.encryptionconfig import Encryption
from k8py.server.apiserver.storage import ObjectStore
from tests.conftest import eventually
from tests.integration.inloop import running_apiserver

PLAIN = "k8py-distinctive-plaintext-7f3a9c51"
ENCODED = base64.b64encode(PLAIN.encode()).decode()
SECRETS = "/api/v1/namespaces/default/secrets"
PREFIX = "/registry/core/secrets/"


def managed(tmp_path) -> Encryption:
    """What `--secrets-encryption` gives the server: the generated key file."""
    path = keyrotation.generated_path(str(tmp_path / "data"))
    keyrotation.ensure_generated(path)
    return Encryption.open(path, managed=True)


def secret(name: str, **annotations: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "annotations": {"note": PLAIN, **annotations}},
            "stringData": {"password": PLAIN}}


async def call(session, server, method: str, path: str, body=None):
    async with session.request(method, server.url + path, json=body) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text.startswith("{") else text)


async def stored(server) -> dict[str, bytes]:
    """Every Secret as the store holds it."""
    page = await server.store.range(PREFIX)
    return {kv.key.rpartition("/")[2]: kv.value for kv in page.items}


def on_disk(server) -> bytes:
    """The database file and its WAL, as bytes."""
    blob = b""
    for path in (server.store.path, server.store.path + "-wal"):
        if os.path.exists(path):
            with open(path, "rb") as f:
                blob += f.read()
    return blob


def checkpoint(server) -> None:
    with sqlite3.connect(server.store.path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def k8py(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "k8py", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "clear"])
async def test_the_files_never_hold_a_secret_value(tmp_path, encrypted):
    async with running_apiserver(tmp_path, "", encryption=managed(tmp_path) if encrypted
                                 else None) as server, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
        for i in range(5):
            code, body = await call(session, server, "POST", SECRETS, secret(f"s{i}"))
            assert code == 201, body
            assert body["data"] == {"password": ENCODED}
        code, body = await call(session, server, "PUT", f"{SECRETS}/s4",
                                {**body, "data": {"password": ENCODED, "more": ENCODED}})
        assert code == 200, body
        code, body = await call(session, server, "GET", f"{SECRETS}/s4")
        assert code == 200 and body["data"]["more"] == ENCODED
        code, body = await call(session, server, "GET", SECRETS)
        assert [item["data"]["password"] for item in body["items"]] == [ENCODED] * 5
        assert body["items"][0]["metadata"]["annotations"]["note"] == PLAIN
        for stage in ("before a checkpoint", "after a checkpoint"):
            blob = on_disk(server)
            assert (PLAIN.encode() in blob) is not encrypted, stage
            assert (ENCODED.encode() in blob) is not encrypted, stage
            checkpoint(server)
        values = await stored(server)
        assert len(values) == 5
        for value in values.values():
            assert value.startswith(b"k8s:enc:aescbc:v1:aescbckey:") is encrypted


async def test_watches_see_plaintext_and_unknown_keys_are_500s(tmp_path):
    path = tmp_path / "encryption.yaml"

    def write(*keys: tuple[str, bytes]) -> None:
        listed = ", ".join(f'{{"name": "{n}", "secret": "{base64.b64encode(k).decode()}"}}'
                           for n, k in keys)
        path.write_text(
            '{"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",'
            ' "resources": [{"resources": ["secrets"], "providers": [{"aesgcm": {"keys": ['
            f'{listed}]}}}}, {{"identity": {{}}}}]}}]}}')
    write(("first", b"1" * 32))
    encryption = Encryption.open(str(path))
    async with running_apiserver(tmp_path, "", encryption=encryption) as server, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
        code, created = await call(session, server, "POST", SECRETS, secret("watched"))
        assert code == 201
        async with session.get(server.url + SECRETS, params={
                "watch": "true", "resourceVersion": "1", "timeoutSeconds": "5"}) as response:
            await call(session, server, "DELETE", f"{SECRETS}/watched")
            events = []
            async for line in response.content:
                events.append(json.loads(line))
                if events[-1]["type"] == "DELETED":
                    break
        mine = [e for e in events if e["object"]["metadata"]["name"] == "watched"]
        assert [e["type"] for e in mine] == ["ADDED", "DELETED"]
        assert all(e["object"]["data"]["password"] == ENCODED for e in mine)

        await call(session, server, "POST", SECRETS, secret("orphan"))
        write(("second", b"2" * 32))  # the first key gone: what it sealed cannot be read
        assert encryption.reload()
        code, body = await call(session, server, "GET", f"{SECRETS}/orphan")
        assert code == 500
        assert body["reason"] == "InternalError"
        assert body["message"] == ("Internal error occurred: no matching key was found for "
                                   "the provided AES transformer")
        code, body = await call(session, server, "GET", SECRETS)
        assert code == 500 and body["message"] == (
            'Internal error occurred: unable to transform key '
            '"/registry/core/secrets/default/orphan": no matching key was found for the '
            "provided AES transformer")
        code, body = await call(session, server, "GET", "/api/v1/namespaces")
        assert code == 200  # what is not encrypted is untouched
        unconfigured = ObjectStore(server.store)  # a server started without the file
        for read in (unconfigured.get, unconfigured.get_raw):
            with pytest.raises(errors.InternalError, match="^Internal error occurred: identity "
                                                           "transformer tried to read encrypted"):
                await read(builtin("v1", "secrets"), "default", "orphan")


async def test_a_changed_file_reaches_the_running_server(tmp_path):
    """A user's file: new writes take its new first key once it is saved, old values still
    read, and reencrypt moves them all to it."""
    old, new = base64.b64encode(b"o" * 32).decode(), base64.b64encode(b"n" * 16).decode()
    path = tmp_path / "encryption.yaml"
    header = ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
              "resources:\n- resources: [secrets, configmaps]\n  providers:\n")
    path.write_text(header + f"  - aescbc: {{keys: [{{name: old, secret: '{old}'}}]}}\n")
    encryption = Encryption.open(str(path))
    follower = asyncio.create_task(encryption.follow(interval=0.05))
    try:
        async with running_apiserver(tmp_path, "", encryption=encryption) as server, \
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
            for i in range(3):
                assert (await call(session, server, "POST", SECRETS, secret(f"s{i}")))[0] == 201
            code, body = await call(session, server, "PUT", keyrotation.CONFIG_PATH,
                                    {"stage": "prepare"})
            assert code == 400 and "--encryption-provider-config" in body["message"]
            path.write_text(header + f"  - aesgcm: {{keys: [{{name: new, secret: '{new}'}}]}}\n"
                            f"  - aescbc: {{keys: [{{name: old, secret: '{old}'}}]}}\n")

            async def takes_new_key():
                name = f"probe{len(await stored(server))}"
                assert (await call(session, server, "POST", SECRETS, secret(name)))[0] == 201
                return (await stored(server))[name].startswith(b"k8s:enc:aesgcm:v1:new:")
            await eventually(takes_new_key, timeout=10, interval=0.05, what="the new key")
            assert (await stored(server))["s0"].startswith(b"k8s:enc:aescbc:v1:old:")
            code, body = await call(session, server, "GET", f"{SECRETS}/s0")
            assert code == 200 and body["data"]["password"] == ENCODED

            code, body = await call(session, server, "PUT", keyrotation.CONFIG_PATH,
                                    {"stage": "reencrypt_active"})
            assert code == 200, body

            async def finished():
                return (await call(session, server, "GET", keyrotation.STATUS_PATH)
                        )[1]["stage"] == "reencrypt_finished"
            await eventually(finished, timeout=30, what="reencrypt_finished")
            values = await stored(server)
            assert values and all(v.startswith(b"k8s:enc:aesgcm:v1:new:")
                                  for v in values.values())
    finally:
        follower.cancel()


async def test_the_endpoints_are_for_admins_only(tmp_path):
    async with running_apiserver(tmp_path, "", encryption=managed(tmp_path)) as server:
        node = pki.issue_node_credentials(server.certs, "node-1")
        cert, key = tmp_path / "node.crt", tmp_path / "node.key"
        cert.write_bytes(node.client_cert)
        key.write_bytes(node.client_key)
        as_node = server.ssl(client_cert=False)
        as_node.load_cert_chain(str(cert), str(key))
        for context, expected in ((server.ssl(client_cert=False), 401), (as_node, 403)):
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=context)) as session:
                code, body = await call(session, server, "GET", keyrotation.STATUS_PATH)
                assert code == expected, body
                code, body = await call(session, server, "PUT", keyrotation.CONFIG_PATH,
                                        {"stage": "prepare"})
                assert code == expected, body
        assert body["message"] == ('forbidden: User "system:node:node-1" cannot put path '
                                   '"/v1-k8py/encrypt/config"')
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
            for change, message in (({"stage": "rotate"}, "incorrect stage: start"),
                                    ({"stage": "nope"}, "unknown stage nope requested"),
                                    ({"force": True}, "the body must be")):
                code, body = await call(session, server, "PUT", keyrotation.CONFIG_PATH,
                                        change)
                assert code == 400 and message in body["message"], body


async def test_status_without_encryption(tmp_path):
    async with running_apiserver(tmp_path, "") as server, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
        code, body = await call(session, server, "GET", keyrotation.STATUS_PATH)
        assert code == 200 and "enable" not in body
        code, body = await call(session, server, "PUT", keyrotation.CONFIG_PATH,
                                {"stage": "prepare"})
        assert code == 400 and "not enabled" in body["message"]


async def test_key_rotation_with_the_command_while_secrets_are_written(tmp_path):
    encryption = managed(tmp_path)
    async with running_apiserver(tmp_path, "", encryption=encryption) as server, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=server.ssl())) as session:
        kubeconfig = str(tmp_path / "admin.yaml")
        pki.write_kubeconfig(server.certs, kubeconfig, server.url, 0o600)

        async def command(*args: str) -> str:
            code, out, err = await k8py("secrets-encrypt", *args, "--kubeconfig", kubeconfig)
            assert code == 0, err
            return out

        for i in range(40):
            assert (await call(session, server, "POST", SECRETS, secret(f"s{i:02}")))[0] == 201
        status = await command("status")
        assert status.splitlines()[:3] == ["Encryption Status: Enabled",
                                           "Current Rotation Stage: start",
                                           "Server Encryption Hashes: All hashes match"]
        assert "Active  Key Type  Name\n------  --------  ----\n *      AES-CBC   aescbckey\n" \
            in status

        assert await command("prepare") == "prepare completed successfully\n"
        state = json.loads(await command("status", "-o", "json"))
        new = state["inactivekeys"][0]
        assert state["stage"] == "prepare" and state["activekey"] == "aescbckey"
        assert new.startswith("aescbckey-20")
        await call(session, server, "POST", SECRETS, secret("after-prepare"))
        assert (await stored(server))["after-prepare"].startswith(
            b"k8s:enc:aescbc:v1:aescbckey:")  # the new key reads, it does not write yet

        assert await command("rotate") == "rotate completed successfully\n"
        await call(session, server, "POST", SECRETS, secret("after-rotate"))
        assert (await stored(server))["after-rotate"].startswith(
            f"k8s:enc:aescbc:v1:{new}:".encode())
        code, body = await call(session, server, "GET", f"{SECRETS}/s00")
        assert code == 200 and body["data"]["password"] == ENCODED  # the old key still reads

        written: dict[str, int] = {}
        stop = asyncio.Event()

        async def writer(name: str) -> None:  # read-modify-write, again on a conflict
            n = 0
            while not stop.is_set():
                n += 1
                while True:
                    _, current = await call(session, server, "GET", f"{SECRETS}/{name}")
                    current["metadata"]["annotations"]["n"] = str(n)
                    code, _ = await call(session, server, "PUT", f"{SECRETS}/{name}", current)
                    if code == 200:
                        written[name] = n
                        break
                    assert code == 409
        writers = [asyncio.create_task(writer(f"s{i:02}")) for i in range(0, 40, 8)]
        assert await command("reencrypt") == "reencryption started\n"

        async def finished():
            return json.loads(await command("status", "-o", "json"))["stage"] == \
                "reencrypt_finished"
        await eventually(finished, timeout=60, interval=0.2, what="reencrypt_finished")
        stop.set()
        await asyncio.gather(*writers)

        values = await stored(server)
        assert len(values) == 42
        assert all(v.startswith(f"k8s:enc:aescbc:v1:{new}:".encode()) for v in values.values())
        state = json.loads(await command("status", "-o", "json"))
        assert state["keys"] == [{"name": new, "type": "AES-CBC", "active": True}]
        assert stat.S_IMODE(os.stat(encryption.path).st_mode) == 0o600
        with open(encryption.path) as f:
            assert "aescbckey\"" not in f.read()  # the old key is gone from the file
        code, body = await call(session, server, "GET", SECRETS)
        assert code == 200 and len(body["items"]) == 42
        for item in body["items"]:
            assert item["data"]["password"] == ENCODED
            name = item["metadata"]["name"]
            if name in written:  # no write racing the rewrite was lost
                assert item["metadata"]["annotations"]["n"] == str(written[name])
        assert written and (await call(session, server, "POST", SECRETS,
                                       secret("afterwards")))[0] == 201
        code, body = await call(session, server, "GET", f"{SECRETS}/afterwards")
        assert code == 200 and body["data"]["password"] == ENCODED
        with open(keyrotation.state_path(server.data_dir)) as f:
            assert json.load(f)["stage"] == "reencrypt_finished"
