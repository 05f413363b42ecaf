"""The embedded etcd (`k8py server --cluster-init`, or joining with `--server`), as k3s runs it:
Debian's `/usr/bin/etcd` as the server's supervised child, the store (`store/etcd.py`) pointed
at the local member.

Layout: data in `<data-dir>/server/db/etcd/` (etcd's `member/` inside), its log in
`<data-dir>/server/db/etcd.log`, its pid in `etcd.pid`, and `<data-dir>/server/db/etcd/config`
(this member's name and URLs in etcd's --config-file keys, as k3s writes it: read by `k8py etcd
member`, `k8py etcd-snapshot` and `--cluster-reset`, `store/etcdsnapshot.embedded_member`). Certificates are
`etcdpki`'s. URLs: clients at `https://127.0.0.1:<client port>` and `https://<node-ip>:<client
port>` (advertised: the node-ip one), peers at `https://<node-ip>:<peer port>` (2379 and 2380
by default; both settable, so that several servers share one host in tests). The member's name
is the node name.

`run_etcd(member, ready, join=...)` is a Supervisor daemon, following the agent's containerd
(`k8py.agent.containerd`):

1. a first start without data and without `join`: `--initial-cluster-state new`, a
   one-member cluster;
2. a first start with `join` (the client URLs of the existing cluster, from the bootstrap
   answer, `serverjoin`): `MemberAdd` of this member's peer URL as a learner through the
   existing members (or the unstarted member a failed earlier attempt added, found by its peer
   URL; etcd's refusals of a change while a member is new or down, "unhealthy cluster", are
   retried for two minutes), then etcd with `--initial-cluster` of all members and
   `--initial-cluster-state existing`; once it answers, `MemberPromote` is retried until the learner has caught up with
   the leader and becomes a voting member;
3. a start with data (a restart, `member/` exists): etcd resumes from its WAL; no flags of
   the initial cluster matter, nothing is added again;
4. etcd runs in its own session, logging to the file, with PDEATHSIG=SIGTERM; `ready` is set
   once the local member answers `Status` (and, when joining, is promoted). If it exits it
   is restarted after a backoff (1 s doubling to 30 s, reset after a minute of running);
   dying before it was ever ready ends the daemon with the log's last line. On cancellation:
   SIGTERM, then SIGKILL to its process group after `stop_timeout`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import platform
import time

import yaml

from k8py import childprocess
from k8py.certificates import write_private
from k8py.server.etcdpki import EtcdPKI
from k8py.server.store.backend import Unavailable
from k8py.server.store.etcdclient import (
    EtcdClient,
    NotInSync,
    OutcomeUnknown,
    parse_endpoints,
)

log = logging.getLogger(__name__)

ETCD = "/usr/bin/etcd"
MEMBER_FILE = "config"  # etcd's --config-file YAML, k3s's name
# etcd's refusals of a member change it did not apply (ErrUnhealthy, ErrNotEnoughStartedMembers)
# etcd 3.4 takes one learner at a time ("too many learner members"): servers started together
# join one after the other, each once the one before is promoted
MEMBER_CHANGE_REFUSED = ("etcdserver: unhealthy cluster", "not enough started members",
                         "too many learner members")


class EtcdError(Exception):
    """The embedded etcd could not be started or joined (one line for the operator)."""


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    db_dir: str  # <data-dir>/server/db
    node_ip: str
    client_port: int
    peer_port: int
    certs: EtcdPKI

    @property
    def data_dir(self) -> str:
        return os.path.join(self.db_dir, "etcd")

    @property
    def log_path(self) -> str:
        return os.path.join(self.db_dir, "etcd.log")

    @staticmethod
    def _url(host: str, port: int) -> str:
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"

    @property
    def local_client_url(self) -> str:
        return self._url("127.0.0.1", self.client_port)

    @property
    def client_url(self) -> str:
        return self._url(self.node_ip, self.client_port)

    @property
    def peer_url(self) -> str:
        return self._url(self.node_ip, self.peer_port)

    def has_data(self) -> bool:
        return os.path.isdir(os.path.join(self.data_dir, "member"))

    def client(self, endpoints: list[str] | None = None, **options) -> EtcdClient:
        """A client of `endpoints` (default: the local member) with this server's etcd client
        certificate."""
        cert, key = self.certs.client_cert
        urls = ",".join(endpoints or [self.local_client_url])
        return EtcdClient(parse_endpoints(urls), cafile=self.certs.server_ca, certfile=cert,
                          keyfile=key, **options)

    def command(self, initial_cluster: str, state: str, binary: str = ETCD) -> list[str]:
        listen = sorted({self.local_client_url, self.client_url})
        cert, key = self.certs.server_cert
        peer_cert, peer_key = self.certs.peer_cert
        return [
            binary, "--name", self.name, "--data-dir", self.data_dir,
            "--listen-client-urls", ",".join(listen),
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
            "--cert-file", cert, "--key-file", key,
            "--trusted-ca-file", self.certs.server_ca, "--client-cert-auth",
            "--peer-cert-file", peer_cert, "--peer-key-file", peer_key,
            "--peer-trusted-ca-file", self.certs.peer_ca, "--peer-client-cert-auth",
            # k3s's timings: 500 ms heartbeats, 5 s elections (slow disks, busy hosts)
            "--heartbeat-interval", "500", "--election-timeout", "5000",
            "--logger", "zap", "--log-outputs", "stderr",
        ]

    def write_member_file(self) -> None:
        write_private(os.path.join(self.data_dir, MEMBER_FILE), yaml.safe_dump({
            "name": self.name, "data-dir": self.data_dir,
            "advertise-client-urls": self.client_url,
            "listen-client-urls": ",".join([self.local_client_url, self.client_url]),
            "initial-advertise-peer-urls": self.peer_url,
            "listen-peer-urls": self.peer_url}, sort_keys=False).encode())


def read_member_file(db_dir: str) -> dict:
    """This server's member as `run_etcd` last started it (name, clientURL, localClientURL,
    peerURL); OSError/ValueError if none."""
    with open(os.path.join(db_dir, "etcd", MEMBER_FILE), encoding="utf-8") as f:
        try:
            config = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError(f"{f.name}: {exc}") from None
    try:
        return {"name": config["name"], "clientURL": config["advertise-client-urls"],
                "localClientURL": config["listen-client-urls"].split(",")[0],
                "peerURL": config["initial-advertise-peer-urls"]}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{f.name}: not a member config ({exc})") from None


def _initial_cluster(members) -> str:
    return ",".join(f"{m.name}={url}" for m in members for url in m.peerURLs)


async def add_learner(member: Member, join: list[str], timeout: float = 120.0
                      ) -> tuple[str, int]:
    """Add `member` as a learner through the cluster at `join`; (its --initial-cluster, its
    ID). An unstarted member with our peer URL (a start that failed after MemberAdd) is
    reused rather than added twice."""
    client = member.client(join)
    deadline = time.monotonic() + timeout
    try:
        while True:
            members = await client.member_list()
            mine = [m for m in members if member.peer_url in m.peerURLs]
            if mine and mine[0].name and mine[0].name != member.name:
                raise EtcdError(f"{member.peer_url} already belongs to etcd member "
                                f"{mine[0].name!r}: remove it first (k8py etcd member remove)")
            if mine:
                new = mine[0]
                log.info("etcd: reusing member %x added earlier for %s", new.ID,
                         member.peer_url)
                break
            try:
                new, members = await client.member_add([member.peer_url], learner=True)
            except Unavailable as exc:
                # etcd refuses a member change until every voting member has been connected
                # for 5 s ("unhealthy cluster": e.g. right after another server joined),
                # while too few have started, or while another learner is catching up; a
                # change whose outcome is unknown is looked for in the member list again
                if time.monotonic() > deadline or not (
                        isinstance(exc, OutcomeUnknown) or any(
                            refusal in str(exc) for refusal in MEMBER_CHANGE_REFUSED)):
                    raise
                log.info("etcd: adding %s: %s; trying again", member.name, exc)
                await asyncio.sleep(1.0)
                continue
            log.info("etcd: added learner %x (%s) to the cluster", new.ID, member.peer_url)
            break
    finally:
        client.close()
    entries = [f"{m.name}={url}" for m in members if m.ID != new.ID and m.name
               for url in m.peerURLs]
    entries.append(f"{member.name}={member.peer_url}")
    return ",".join(entries), new.ID


async def promote(member: Member, join: list[str], member_id: int) -> None:
    """MemberPromote until the learner has caught up (etcd refuses it before)."""
    client = member.client(join)
    next_note = time.monotonic() + 10
    try:
        while True:
            try:
                await client.member_promote(member_id)
                log.info("etcd: member %s promoted to a voting member", member.name)
                return
            except NotInSync:
                pass
            except Unavailable as exc:
                if "not a learner" in str(exc):  # promoted by an earlier attempt
                    return
                log.info("etcd: promoting %s: %s", member.name, exc)
            if time.monotonic() > next_note:
                log.info("etcd: waiting for learner %s to catch up", member.name)
                next_note = time.monotonic() + 10
            await asyncio.sleep(0.5)
    finally:
        client.close()


async def _start(member: Member, initial_cluster: str, state: str, binary: str
                 ) -> asyncio.subprocess.Process:
    os.makedirs(member.db_dir, mode=0o700, exist_ok=True)
    env = dict(os.environ)
    if platform.machine() not in ("x86_64", "aarch64"):  # etcd 3.4 refuses others without it
        env["ETCD_UNSUPPORTED_ARCH"] = {"armv7l": "arm"}.get(platform.machine(),
                                                             platform.machine())
    with open(member.log_path, "ab") as log_file:
        os.chmod(member.log_path, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *member.command(initial_cluster, state, binary), env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                start_new_session=True, preexec_fn=childprocess.die_with_parent)
        except OSError as exc:
            raise EtcdError(f"cannot run {binary}: {exc.strerror}") from None
    with open(os.path.join(member.db_dir, "etcd.pid"), "w", encoding="ascii") as f:
        f.write(f"{proc.pid}\n")
    log.info("etcd started (pid %d): member %s, clients %s, peers %s", proc.pid, member.name,
             member.client_url, member.peer_url)
    return proc


async def wait_answering(member: Member, proc: asyncio.subprocess.Process,
                         timeout: float) -> None:
    """Until the local member answers Status; EtcdError if etcd exits or time runs out."""
    client = member.client(retry_for=1.0)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.returncode is not None:
                raise EtcdError(f"etcd exited with code {proc.returncode}")
            try:
                await client.status()
                return
            except Unavailable as exc:
                if time.monotonic() > deadline:
                    raise EtcdError(f"etcd did not answer within {timeout:.0f}s ({exc})") \
                        from None
            await asyncio.sleep(0.2)
    finally:
        client.close()


async def run_etcd(member: Member, ready: asyncio.Event, *, join: list[str] | None = None,
                   binary: str = ETCD, start_timeout: float = 120.0, stop_timeout: float = 10.0,
                   backoff: tuple[float, float] = (1.0, 30.0)) -> None:
    """Run (and keep running) the embedded etcd; see the module docstring."""
    learner_id = None
    if member.has_data():
        initial, state = f"{member.name}={member.peer_url}", "existing"
        log.info("etcd: restarting member %s from %s", member.name, member.data_dir)
    elif join:
        initial, learner_id = await add_learner(member, join)
        state = "existing"
    else:
        initial, state = f"{member.name}={member.peer_url}", "new"
    delay, ever_ready = backoff[0], False
    while True:
        proc = await _start(member, initial, state, binary)
        try:
            try:
                await wait_answering(member, proc, start_timeout)
                if learner_id is not None:
                    await promote(member, join, learner_id)
                    learner_id = None
            except EtcdError as exc:
                if not ever_ready:
                    last = childprocess.last_log_line(member.log_path)
                    raise EtcdError(f"{exc}{': ' + last if last else ''} "
                                    f"(log: {member.log_path})") from None
                log.warning("etcd did not come back: %s", exc)
            else:
                member.write_member_file()
                log.info("etcd ready: member %s", member.name)
                ever_ready = True
                ready.set()
                started = time.monotonic()
                code = await proc.wait()
                ready.clear()
                if time.monotonic() - started > 60:
                    delay = backoff[0]
                log.warning("etcd exited with code %s; restarting in %.0fs (log: %s)",
                            code, delay, member.log_path)
        finally:
            await childprocess.stop(proc, stop_timeout, "etcd", kill_group=True)
        await asyncio.sleep(delay)
        delay = min(delay * 2, backoff[1])
