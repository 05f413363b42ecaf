"""The API servers a client can use, and which one to use now: the client side of several
API servers (k3s's agent load balancer, `pkg/agent/loadbalancer`).

A `ServerList` holds the URL a client was given (the *default*, e.g. `k8py agent
--server`) and the servers it has learned since (`update`: the `kubernetes` endpoints, which
every live API server writes itself into, `k8py.server.controllers.advertising`). The
transport (`k8py.client.http.HttpTransport`) asks it for `candidates` in order and reports
what happened:

- `current` is used until it fails; a failure (connection refused, reset, timed out: not an
  HTTP error, which is an answer) marks the server unhealthy for `cooldown` seconds and
  moves `current` to the next healthy server, in list order;
- unhealthy servers stay candidates, after the healthy ones (least recently failed first),
  so that a client whose servers all failed still tries them all rather than none;
- the default stays a candidate even when the endpoints do not list it (it is what the
  client was told to use; k3s keeps it as the fallback too);
- `healthy` and `failed` come from requests and from the transport's health checks
  (`GET /readyz` on every known server); a recovered server is a candidate again, but
  `current` does not move back to it while the current one works.

With `state_file`, the learned servers are kept as JSON (`{"serverURL": default, "servers":
[...]}`, written 0600 through a temporary file; k3s keeps
`<data-dir>/agent/etc/k3s-agent-load-balancer.json`) and read back on start when it was
written for the same default URL, so a restarted agent whose default server is down starts
on another one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

COOLDOWN = 15.0  # seconds a failed server is passed over


class ServerList:
    def __init__(self, default: str, state_file: str | None = None, *,
                 cooldown: float = COOLDOWN, clock: Callable[[], float] = time.monotonic):
        self.default = default.rstrip("/")
        self.state_file = state_file
        self.cooldown, self._clock = cooldown, clock
        self.servers: list[str] = [self.default]
        self.current = self.default
        self._failed_at: dict[str, float] = {}
        self._listeners: list[Callable[[str], None]] = []
        if state_file:
            self._load()

    # --- choosing ---------------------------------------------------------------------------

    def is_healthy(self, server: str) -> bool:
        failed = self._failed_at.get(server)
        return failed is None or self._clock() - failed >= self.cooldown

    def candidates(self) -> list[str]:
        """Every known server, the order to try them in: the current one if healthy, the
        other healthy ones in list order, then the unhealthy ones, least recently failed
        first."""
        known = self.servers if self.default in self.servers else [*self.servers, self.default]
        healthy = [s for s in known if self.is_healthy(s)]
        if self.current in healthy:
            healthy.remove(self.current)
            healthy.insert(0, self.current)
        unhealthy = sorted((s for s in known if not self.is_healthy(s)),
                           key=lambda s: self._failed_at[s])
        return healthy + unhealthy

    def on_failure(self, listener: Callable[[str], None]) -> None:
        """Call `listener(server)` whenever a server is marked failed (the transport cuts the
        watches open to it, so their informers go on elsewhere)."""
        self._listeners.append(listener)

    def failed(self, server: str) -> None:
        first = self.is_healthy(server)
        self._failed_at[server] = self._clock()
        if server == self.current:
            following = self.candidates()[0]
            if following != server:
                self.current = following
                log.warning("API server %s failed: using %s", server, following)
        elif first:
            log.warning("API server %s failed", server)
        for listener in self._listeners:
            listener(server)

    def healthy(self, server: str) -> None:
        if self._failed_at.pop(server, None) is not None:
            log.info("API server %s is healthy again", server)
        if not self.is_healthy(self.current):
            log.warning("API server %s failed: using %s", self.current, server)
            self.current = server

    # --- learning ---------------------------------------------------------------------------

    def update(self, servers: list[str]) -> bool:
        """The servers the cluster lists now (an empty list is ignored: the endpoints
        between two writers, not a cluster without servers). True if it changed."""
        servers = [s.rstrip("/") for s in servers]
        if not servers or servers == self.servers:
            return False
        log.info("API servers: %s", ", ".join(servers))
        self.servers = servers
        for gone in [s for s in self._failed_at if s not in servers and s != self.default]:
            del self._failed_at[gone]
        if self.current not in servers:
            # a server taken out of the list is stopping: go on elsewhere before it does
            following = self.candidates()[0]
            log.info("API server %s left the list: using %s", self.current, following)
            self.current = following
        if self.state_file:
            self._save()
        return True

    def _load(self) -> None:
        try:
            with open(self.state_file, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.state_file, exc)
            return
        if not isinstance(state, dict) or state.get("serverURL") != self.default:
            return  # written for another --server, or not ours
        servers = state.get("servers")
        if not isinstance(servers, list) or not servers or \
                not all(isinstance(s, str) for s in servers):
            return
        self.servers = servers
        log.info("API servers from %s: %s", self.state_file, ", ".join(servers))

    def _save(self) -> None:
        folder = os.path.dirname(self.state_file)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        partial = self.state_file + ".tmp"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"serverURL": self.default, "servers": self.servers}, f, indent=2)
        os.replace(partial, self.state_file)
