"""Snapshots of an etcd datastore (the `Snapshotter` contract of `snapshot.py`), and the two
offline operations on an embedded member's data dir that `k8py server --cluster-reset` needs.

Save (`EtcdSnapshots.save`)
    Through the Maintenance.Snapshot RPC of whichever member the client is on, as `etcdctl
    snapshot save`: the member's bolt database followed by its sha256, written to a hidden
    partial file (mode 0600: the store holds Secrets), the trailer checked, then fsynced and
    renamed into place. It works against any etcd the server can reach (`--datastore-endpoint
    https://...` or the embedded member), beside a running server.

Restore (`restore_member`)
    `etcdctl snapshot restore` (etcd 3.4 has no etcdutl) into a new data dir beside the
    member's, with the member's name and peer URL as a one-member cluster (a new cluster ID,
    so peers of the old cluster cannot rejoin it by mistake, as k3s). The old data dir is moved
    aside (`etcd-old-<unix time>`, k3s's name); files other than `member/` (the embedded
    server's config) are copied into the new dir. etcd 3.4's restore has no `--bump-revision`
    or `--mark-compacted`: the store continues at the snapshot's revision, as k3s's does;
    clients holding newer resourceVersions relist once their watches break on the restart.

Reset (`reset_member`)
    `--cluster-reset` without a snapshot: etcd is run once on the data dir with
    `--force-new-cluster` (the member keeps its data and ID, every other member is removed),
    until it answers as a healthy one-member cluster, then stopped. Its client and peer
    listeners are unix sockets in a private (0700) directory: nothing can reach it meanwhile.

A data dir whose datastore is gone (wiped, or a new host with the cluster's CA files) restores
an etcd snapshot into the member its flags describe (`--node-name`, `--node-ip`,
`--etcd-peer-port`): the next start runs that member from the restored data.

Both refuse a data dir a running etcd holds: bbolt keeps an exclusive flock on
`member/snap/db` while etcd runs (`StoreLocked`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time

from k8py.server.store.backend import CorruptStore, StoreLocked, Unavailable
from k8py.server.store.etcdclient import EtcdClient, Endpoint
from k8py.server.store.snapshot import NoSnapshots, Restored, _fsync, _partial_path
from k8py.server.store.sqlite import SQLITE_HEADER

HASH_SIZE = 32  # sha256
RESET_TIMEOUT = 60.0  # seconds for the --force-new-cluster run to become healthy


@dataclasses.dataclass(frozen=True)
class Member:
    """An embedded etcd member, as restore and reset need it."""

    data_dir: str  # <data-dir>/server/db/etcd
    name: str
    peer_url: str  # its --initial-advertise-peer-urls


class EtcdSnapshots:
    """Snapshots of an etcd cluster; restore only for an embedded member (`member`)."""

    def __init__(self, endpoints: list[Endpoint], *, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 member: Member | None = None):
        self.endpoints = endpoints
        self.tls = {"cafile": cafile, "certfile": certfile, "keyfile": keyfile}
        self.member = member

    async def save(self, destination: str) -> int:
        destination = os.path.abspath(destination)
        partial = _partial_path(destination)
        client = EtcdClient(self.endpoints, **self.tls)
        try:
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w+b") as sink:
                revision = await client.snapshot(sink)
            await asyncio.to_thread(check_hash, partial)
            _fsync(partial)
            os.replace(partial, destination)
            _fsync(os.path.dirname(destination))
            return revision
        except OSError as exc:
            raise Unavailable(f"snapshot to {destination} failed: {exc.strerror}") from exc
        finally:
            client.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)

    async def restore(self, source: str) -> Restored:
        if self.member is None:
            raise NoSnapshots("an external etcd cluster is restored on its own members "
                              "(etcdctl snapshot restore); k8py restores only its embedded "
                              "etcd")
        return await asyncio.to_thread(restore_member, self.member, source)


def is_snapshot_file(path: str) -> bool:
    """Whether `path` has an etcd snapshot's shape (whole bolt pages and a sha256 trailer,
    no SQLite header): what `--cluster-reset` restores as etcd when the data dir has none."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError:
        return False
    return size > HASH_SIZE and size % 512 == HASH_SIZE and header != SQLITE_HEADER


def check_hash(path: str) -> None:
    """A snapshot file's sha256 trailer matches its database, as `etcdctl snapshot restore`
    checks it (a bolt file is whole pages: a size of pages + 32 bytes carries the hash)."""
    try:
        size = os.path.getsize(path)
        if size % 512 != HASH_SIZE or size <= HASH_SIZE:
            raise CorruptStore(f"{path} is not an etcd snapshot (no sha256 trailer)")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            left = size - HASH_SIZE
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    raise CorruptStore(f"{path} was truncated while being read")
                digest.update(chunk)
                left -= len(chunk)
            trailer = f.read(HASH_SIZE)
    except FileNotFoundError:
        raise NoSnapshots(f"no snapshot at {path}") from None
    if digest.digest() != trailer:
        raise CorruptStore(f"{path}: the snapshot's sha256 does not match its contents")


def _etcdctl(*args: str, cwd: str | None = None, timeout: float = 300) -> str:
    if shutil.which("etcdctl") is None:
        raise Unavailable("etcdctl is not installed (Debian: apt install etcd-client)")
    result = subprocess.run(["etcdctl", *args], capture_output=True, text=True, cwd=cwd,
                            env={**os.environ, "ETCDCTL_API": "3"}, timeout=timeout)
    if result.returncode != 0:
        raise Unavailable(f"etcdctl {args[0]} {args[1] if len(args) > 1 else ''}: "
                          f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def snapshot_status(path: str) -> dict:
    """etcdctl's view of a snapshot file: hash, revision, totalKey, totalSize."""
    return json.loads(_etcdctl("snapshot", "status", path, "-w", "json"))


@contextlib.contextmanager
def _not_running(data_dir: str):
    """Held while the data dir is changed: StoreLocked if an etcd has it open."""
    db = os.path.join(data_dir, "member", "snap", "db")
    try:
        fd = os.open(db, os.O_RDONLY)
    except FileNotFoundError:
        yield  # no database yet: nothing runs on it
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLocked(f"{data_dir} is in use by a running etcd: stop the k8py "
                              "server first") from None
        yield
    finally:
        os.close(fd)


def restore_member(member: Member, source: str) -> Restored:
    """Replace the member's data dir by the snapshot (see the module docstring)."""
    source = os.path.abspath(source)
    check_hash(source)
    status = snapshot_status(source)
    parent = os.path.dirname(os.path.abspath(member.data_dir))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".etcd-restore-", dir=parent)
    try:
        restored = os.path.join(staging, "etcd")
        _etcdctl("snapshot", "restore", source, "--data-dir", restored, "--name", member.name,
                 "--initial-cluster", f"{member.name}={member.peer_url}",
                 "--initial-advertise-peer-urls", member.peer_url,
                 "--initial-cluster-token", "k8py-etcd")
        with _not_running(member.data_dir):
            replaced = None
            if os.path.exists(member.data_dir):
                for entry in os.scandir(member.data_dir):  # the embedded server's own files
                    if entry.name != "member" and entry.is_file(follow_symlinks=False):
                        shutil.copy2(entry.path, os.path.join(restored, entry.name))
                replaced = os.path.join(parent, f"etcd-old-{int(time.time())}")
                os.replace(member.data_dir, replaced)
            os.chmod(restored, 0o700)
            os.replace(restored, member.data_dir)
            _fsync(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    revision = int(status["revision"])
    return Restored(revision, revision, int(status["totalKey"]), replaced)


def reset_member(member: Member, timeout: float = RESET_TIMEOUT) -> None:
    """Make the member's data dir a one-member cluster (`etcd --force-new-cluster`)."""
    if not os.path.isdir(os.path.join(member.data_dir, "member")):
        raise NoSnapshots(f"no etcd data in {member.data_dir}: nothing to reset")
    etcd = shutil.which("etcd")
    if etcd is None:
        raise Unavailable("etcd is not installed (Debian: apt install etcd-server)")
    with _not_running(member.data_dir):
        pass  # checked, and released: etcd takes bbolt's lock itself (and would wait on ours)
    with tempfile.TemporaryDirectory(
            prefix=".etcd-reset-", dir=os.path.dirname(os.path.abspath(member.data_dir))) as run:
        os.chmod(run, 0o700)
        # etcd's unix listeners are `unix://host:port`, a socket of that name in its cwd
        client, peer = "unix://localhost:1", "unix://localhost:2"
        with open(os.path.join(run, "etcd.log"), "wb") as log:
            process = subprocess.Popen(
                [etcd, "--data-dir", os.path.abspath(member.data_dir), "--name", member.name,
                 "--force-new-cluster", "--listen-client-urls", client,
                 "--advertise-client-urls", client, "--listen-peer-urls", peer,
                 "--initial-advertise-peer-urls", member.peer_url,
                 "--logger", "zap", "--log-level", "warn"],
                cwd=run, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    with open(os.path.join(run, "etcd.log"), errors="replace") as f:
                        tail = f.read()[-2000:]
                    raise Unavailable(f"etcd --force-new-cluster exited: {tail}")
                try:
                    _etcdctl("--endpoints", client, "--command-timeout", "2s",
                             "endpoint", "health", cwd=run, timeout=10)
                    break
                except Unavailable:
                    if time.monotonic() > deadline:
                        raise Unavailable("etcd --force-new-cluster did not become healthy "
                                          f"within {timeout:g}s") from None
                    time.sleep(0.2)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# --- the embedded member ---------------------------------------------------------------------

EMBEDDED_DIR = os.path.join("server", "db", "etcd")  # under the data dir, as k3s
EMBEDDED_TLS = os.path.join("server", "tls", "etcd")  # k3s's client files for it


def embedded_member(data_dir: str) -> tuple[Member, list[Endpoint], dict] | None:
    """The embedded etcd of a data dir, from the etcd config file the server writes for it
    (`<data-dir>/server/db/etcd/config`, etcd's --config-file YAML, as k3s): the member, its
    client endpoints, and the client TLS files (k3s's `server/tls/etcd/` names when there).
    None when the data dir has no embedded etcd."""
    import yaml

    from k8py.server.store.etcdclient import parse_endpoints

    directory = os.path.join(data_dir, EMBEDDED_DIR)
    try:
        with open(os.path.join(directory, "config")) as f:
            config = yaml.safe_load(f) or {}
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as exc:
        raise CorruptStore(f"{directory}/config: cannot read the etcd config: {exc}") from exc
    try:
        member = Member(directory, str(config["name"]),
                        str(config["initial-advertise-peer-urls"]).split(",")[0])
        endpoints = parse_endpoints(str(config["advertise-client-urls"]))
    except (KeyError, ValueError) as exc:
        raise CorruptStore(f"{directory}/config: not a usable etcd config: {exc}") from exc
    tls_dir = os.path.join(data_dir, EMBEDDED_TLS)
    files = {"cafile": "server-ca.crt", "certfile": "client.crt", "keyfile": "client.key"}
    tls = {k: os.path.join(tls_dir, name) for k, name in files.items()
           if os.path.exists(os.path.join(tls_dir, name))}
    return member, endpoints, tls
