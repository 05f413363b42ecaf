"""A server joining a cluster (`k8py server --server https://first:6443 --token TOKEN`), as k3s's
joining server downloads its bootstrap data.

1. `GET <server>/cacerts`, checked against the token's CA hash (`k8py.agent.join`: the full
   token `K10<hash>::server:<secret>` is required, a server's CA keys are at stake);
2. with TLS verified against that CA, `GET <server>/v1-k8py/server-bootstrap` with
   `Authorization: Bearer <secret>` (`apiserver/join.py`): the files every server shares (the
   cluster CA and its key, the service-account key, the etcd CAs, the generated encryption
   config) and the etcd members' client URLs;
3. the files are written under `<data-dir>/server/` (0600, their folders 0700) before
   `pki.ensure_pki` runs, so this server issues its own leaves from the same CAs; the member
   URLs go to `embeddedetcd.run_etcd`, which adds this server as a learner through them.

A server restarting with etcd data already joined: the bootstrap is fetched again (the CA
may have been rotated) only when the first server answers; the members it is given are not
needed, etcd resumes from its own data.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import posixpath

from k8py.agent.join import JoinError, parse_token, request_with_secret, wait_for_ca
from k8py.certificates import write_private
from k8py.server.apiserver.join import BOOTSTRAP_FILES, SERVER_BOOTSTRAP_PATH

log = logging.getLogger(__name__)


async def _ask(server: str, ca_pem: bytes, secret: str) -> dict:
    status, answer = await request_with_secret(server, ca_pem, secret, "GET",
                                               SERVER_BOOTSTRAP_PATH)
    message = answer.get("message") if isinstance(answer, dict) else None
    if status == 401:
        raise JoinError("the server refused the token's secret (a server joins with the "
                        "server token, <data-dir>/server/token)")
    if status != 200:
        raise JoinError(f"the server refused the bootstrap data: {message or status}")
    if not isinstance(answer, dict) or not isinstance(answer.get("files"), dict) or \
            not isinstance(answer.get("etcdMembers"), list):
        raise JoinError("the server's bootstrap data is incomplete")
    return answer


def _write_files(server_dir: str, files: dict) -> None:
    for name, content in files.items():
        # only the names we ask for, never a path the answer makes up
        if name not in BOOTSTRAP_FILES or not isinstance(content, str):
            continue
        path = os.path.join(server_dir, *posixpath.normpath(name).split("/"))
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            with open(path, "rb") as f:
                if f.read() == content.encode():
                    continue
        except FileNotFoundError:
            pass
        write_private(path, content.encode())


async def bootstrap(server: str, token: str, server_dir: str) -> list[str]:
    """Fetch and write the shared files; the etcd client URLs of the cluster's voting
    members. JoinError when the token or the server is wrong."""
    parsed = parse_token(token)
    if parsed.ca_hash is None:
        raise JoinError("a server joins with the full server token K10<hash>::server:<secret> "
                        "(the first server's <data-dir>/server/token)")
    server = server.rstrip("/")
    ca_pem = await wait_for_ca(server)
    if hashlib.sha256(ca_pem).hexdigest() != parsed.ca_hash:
        raise JoinError("the server's CA does not match the token")
    answer = await _ask(server, ca_pem, parsed.secret)
    await asyncio.to_thread(_write_files, server_dir, answer["files"])
    urls = [url for m in answer["etcdMembers"] if isinstance(m, dict)
            and not m.get("isLearner") for url in m.get("clientURLs") or []
            if isinstance(url, str)]
    if not urls:
        raise JoinError("the server reported no etcd member to join through")
    log.info("fetched the bootstrap data from %s; etcd members at %s", server, ", ".join(urls))
    return urls
