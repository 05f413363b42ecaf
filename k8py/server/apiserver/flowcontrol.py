"""Fair queuing of requests over `--max-requests-inflight` and
`--max-mutating-requests-inflight`: upstream's API Priority and Fairness, in the form that fits
one event loop.

- Reads and writes each have a pool of seats (the two flags; 0 = no limit). A request takes a
  seat for as long as its handler runs and gives it back when it ends, however it ends.
- When every seat is taken a request waits in its flow's queue; the flow is the user name
  (upstream's default FlowSchemas distinguish flows `ByUser`). A freed seat goes to the
  flows with waiting requests in turn (round-robin, oldest request first within a flow), so
  one user's flood costs another user at most a turn, not the flood's length.
- A flow's queue holds at most MAX_QUEUED_PER_FLOW requests (upstream's queueLengthLimit, 50)
  and a pool at most MAX_QUEUED_PER_POOL; a request waits at most WAIT_LIMIT seconds
  (upstream: a quarter of the 60 s request timeout). One that cannot queue or waits too
  long is answered as upstream's filter does: 429, `Retry-After: 1`, the plain text
  `Too many requests, please try again later.` A waiting request whose client leaves is
  cancelled with its handler (aiohttp's handler_cancellation) and leaves its queue at once.
- Exempt, as upstream's `exempt` and `probes` FlowSchemas and its long-running check: the
  group system:masters, /healthz, /livez and /readyz, and long-running requests (watch,
  exec, attach, log, portforward, proxy).

Simplified against upstream, on purpose: there is one priority level per pool instead of the
FlowSchema and PriorityLevelConfiguration objects of `flowcontrol.apiserver.k8s.io/v1` (not
served, so no `X-Kubernetes-PF-*` headers), flows have their own queue instead of being
shuffle-sharded over a fixed number of queues, and a turn is one request, not a share of
seat-seconds (no work estimation). The in-process transport of the control loops never
crosses this (upstream's loopback client is system:masters, exempt as well).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from aiohttp import web

from k8py.server.apiserver.authn import USER_KEY
from k8py.server.apiserver.authz import ANONYMOUS, PRIVILEGED_GROUP

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_QUEUED_PER_FLOW = 50
MAX_QUEUED_PER_POOL = 128 * 50  # upstream's global-default level: 128 queues of 50
WAIT_LIMIT = 15.0
LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "log", "portforward", "proxy"})
PROBE_PATHS = ("/healthz", "/livez", "/readyz")
TOO_MANY = "Too many requests, please try again later."


class Rejected(Exception):
    """The request cannot be served now: its queue is full or it waited too long."""


class FairQueue:
    """`seats` requests served at once; the rest wait in per-flow FIFO queues, served in
    turn. `acquire(flow)` returns once the caller holds a seat (or raises `Rejected`); every
    successful acquire is followed by exactly one `release`."""

    def __init__(self, seats: int, *, per_flow: int = MAX_QUEUED_PER_FLOW,
                 per_pool: int = MAX_QUEUED_PER_POOL, wait_limit: float = WAIT_LIMIT):
        self.seats, self.per_flow, self.per_pool = seats, per_flow, per_pool
        self.wait_limit = wait_limit
        self.serving = 0
        self.queued = 0
        # flows with waiting requests, in turn order: the first one is served next
        self._flows: collections.OrderedDict[str, collections.deque[asyncio.Future]] = \
            collections.OrderedDict()
        self.rejected: collections.Counter[str] = collections.Counter()  # per flow, ever
        self.waited: collections.Counter[str] = collections.Counter()  # requests that queued

    async def acquire(self, flow: str) -> None:
        if self.serving < self.seats and not self._flows:
            self.serving += 1
            return
        queue = self._flows.get(flow)
        if (queue is not None and len(queue) >= self.per_flow) or self.queued >= self.per_pool:
            self.rejected[flow] += 1
            raise Rejected(flow)
        if queue is None:
            queue = self._flows[flow] = collections.deque()
        seat: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(seat)
        self.queued += 1
        self.waited[flow] += 1
        try:
            async with asyncio.timeout(self.wait_limit):
                await seat
        except BaseException as exc:
            if seat.done() and not seat.cancelled():
                # the seat was handed over just as the wait ended: hand it on
                self.release()
            else:
                seat.cancel()
                self._leave(flow, seat)
            if isinstance(exc, TimeoutError):
                self.rejected[flow] += 1
                raise Rejected(flow) from None
            raise

    def release(self) -> None:
        """Give a seat back: to the next flow's oldest waiting request, or to the pool."""
        while self._flows:
            flow, queue = next(iter(self._flows.items()))
            seat = queue.popleft()
            self.queued -= 1
            if queue:
                self._flows.move_to_end(flow)  # its next request waits for its next turn
            else:
                del self._flows[flow]
            if not seat.done():
                seat.set_result(None)  # the seat passes on: `serving` stays as it is
                return
        self.serving -= 1

    def _leave(self, flow: str, seat: asyncio.Future) -> None:
        queue = self._flows.get(flow)
        if queue is None:
            return
        try:
            queue.remove(seat)
        except ValueError:
            return
        self.queued -= 1
        if not queue:
            del self._flows[flow]


class FlowControl:
    """The middleware: exempt requests pass; the others hold a seat of their pool (reads or
    writes) while they are handled, waiting their flow's turn when the pool is full."""

    def __init__(self, reads: int, writes: int, **queueing):
        self.pools = {False: FairQueue(reads, **queueing), True: FairQueue(writes, **queueing)}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        user = request.get(USER_KEY)
        if exempt(request) or (user is not None and PRIVILEGED_GROUP in user.groups):
            return await handler(request)
        pool = self.pools[request.method not in ("GET", "HEAD", "OPTIONS")]
        if not pool.seats:
            return await handler(request)
        try:
            await pool.acquire(user.name if user is not None else ANONYMOUS)
        except Rejected:
            return too_many_requests()
        try:
            return await handler(request)
        finally:
            pool.release()


def too_many_requests() -> web.Response:
    """Upstream's answer (its filters' tooManyRequests, Go's http.Error): plain text, which
    client-go and the Python client both take as a 429 to retry after Retry-After."""
    return web.Response(status=429, text=TOO_MANY + "\n", charset="utf-8",
                        headers={"Retry-After": "1", "X-Content-Type-Options": "nosniff"})


def exempt(request: web.Request) -> bool:
    """Long-running requests and health probes: never queued, never counted."""
    path = request.path
    if any(path == p or path.startswith(p + "/") for p in PROBE_PATHS):
        return True
    segments = path.split("/")
    return request.query.get("watch") in ("true", "1") or "watch" in segments[:5] or \
        segments[-1] in LONG_RUNNING_SUBRESOURCES or "proxy" in segments
