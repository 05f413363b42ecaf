"""The ingress controller's reverse proxy: one aiohttp handler that takes a request, finds its
backend in the current routing table (`ingressrules.Table`) and passes it on.

- The table is read once per request from a callable, so a new table (swapped whole by
  `k8py.net.ingress`) applies to the next request, also on an open keep-alive connection:
  nothing is restarted and no connection dropped.
- Endpoints are taken round robin per backend; a connection refused tries the next one
  (each at most once) before answering 502; no ready endpoint answers 503, no rule 404.
- HTTP/1.1 with keep-alive on both sides (aiohttp's server, and a pooled client connector
  to the endpoints); request and response bodies are streamed, not buffered; content is
  passed as it is (no decompression); the Host header is kept (as ingress-nginx does);
  hop-by-hop headers are dropped; `X-Forwarded-For` (appended to), `-Proto`, `-Host`,
  `-Port` and `X-Real-IP` are set.
- WebSocket upgrades are passed through message by message (text, binary, ping, close
  code), with the subprotocols the client offered.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from k8py.net.ingressrules import Backend, Table

log = logging.getLogger(__name__)

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "proxy-connection"}
CONNECT_TIMEOUT = 5.0
CHUNK = 64 * 1024


def _plain(text: str, status: int) -> web.Response:
    return web.Response(status=status, text=f"{status} {text}\n")


class ReverseProxy:
    def __init__(self, table: Callable[[], Table]):
        self.table = table
        self._turns: dict[str, itertools.count] = {}
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=256,
                                           keepalive_timeout=60, force_close=False),
            auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding",
                                                      "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def _order(self, backend: Backend) -> list[tuple[str, int]]:
        """The backend's endpoints, starting at the next one in turn."""
        turn = next(self._turns.setdefault(backend.name, itertools.count()))
        start = turn % len(backend.endpoints)
        return list(backend.endpoints[start:] + backend.endpoints[:start])

    def _headers(self, request: web.Request) -> CIMultiDict:
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in HOP_BY_HOP)
        peer = request.remote or ""
        earlier = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{earlier}, {peer}" if earlier else peer
        headers["X-Real-IP"] = peer
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if sockname:
            headers["X-Forwarded-Port"] = str(sockname[1])
        return headers

    async def handle(self, request: web.Request) -> web.StreamResponse:
        backend = self.table().route(request.host, request.path)
        if backend is None:
            return _plain("page not found", 404)
        if not backend.endpoints:
            return _plain("service unavailable", 503)
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket" and \
            "upgrade" in request.headers.get("Connection", "").lower()
        for host, port in self._order(backend):
            try:
                if upgrade:
                    return await self._websocket(request, host, port)
                return await self._forward(request, host, port)
            except (TimeoutError, aiohttp.ClientConnectorError) as exc:
                if request.body_exists and request.content.total_bytes:
                    break  # the body is partly sent: another endpoint cannot have it
                log.debug("ingress: %s:%s for %s: %s", host, port, backend.name, exc)
            except aiohttp.ClientError as exc:  # it took the request, then failed it
                log.debug("ingress: %s:%s for %s: %s", host, port, backend.name, exc)
                break
        return _plain("bad gateway", 502)

    async def _forward(self, request: web.Request, host: str, port: int
                       ) -> web.StreamResponse:
        assert self.session is not None
        data = request.content if request.body_exists else None
        async with self.session.request(
                request.method, f"http://{host}:{port}{request.raw_path}",
                headers=self._headers(request), data=data, allow_redirects=False,
                compress=None, chunked=None) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    response.headers.add(name, value)
            if upstream.content_length is not None and request.method != "HEAD":
                response.content_length = upstream.content_length
            elif "Content-Length" in upstream.headers:
                response.headers["Content-Length"] = upstream.headers["Content-Length"]
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    await response.write(chunk)
                await response.write_eof()
            except (aiohttp.ClientError, ConnectionError) as exc:
                # the answer has begun: all that is left is to end the connection
                log.debug("ingress: response from %s:%s cut: %s", host, port, exc)
                if request.transport is not None:
                    request.transport.close()
            return response

    async def _websocket(self, request: web.Request, host: str, port: int
                         ) -> web.StreamResponse:
        assert self.session is not None
        offered = tuple(p.strip() for p in
                        request.headers.get("Sec-WebSocket-Protocol", "").split(",")
                        if p.strip())
        headers = {k: v for k, v in self._headers(request).items()
                   if not k.lower().startswith("sec-websocket")}
        async with self.session.ws_connect(
                f"http://{host}:{port}{request.raw_path}", headers=headers,
                protocols=offered, autoping=False, max_msg_size=0) as upstream:
            client = web.WebSocketResponse(
                protocols=(upstream.protocol,) if upstream.protocol else (),
                autoping=False, max_msg_size=0)
            await client.prepare(request)
            await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
            return client


async def _pump(source, sink) -> None:
    """Messages from one WebSocket to the other until either closes."""
    try:
        async for message in source:
            if message.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.PING:
                await sink.ping(message.data)
            elif message.type == aiohttp.WSMsgType.PONG:
                await sink.pong(message.data)
            else:
                break
    except (ConnectionError, aiohttp.ClientError) as exc:
        log.debug("ingress: websocket ended: %s", exc)
    finally:
        if not sink.closed:
            await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)
