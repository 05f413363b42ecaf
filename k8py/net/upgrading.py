"""Relaying HTTP upgrades through a proxy: how exec, attach and port-forward streams travel.

kubectl and the client libraries open exec, attach and port-forward streams with an HTTP
Upgrade (WebSocket, or SPDY/3.1) to the API server, which passes the request on to the pod's
kubelet, which passes it on to the container runtime's stream server. Each hop is the same
upgrade-aware proxy (upstream's `UpgradeAwareHandler`):

1. `dial`: open a connection to the next hop (TLS or plain TCP), send the request line and
   the headers the upgrade needs (`upgrade_headers`: Connection, Upgrade, the
   Sec-WebSocket-* handshake and SPDY's X-Stream-Protocol-Version), and read the response
   head;
2. `relay`: a refusal (anything but 101) goes back to the client as an ordinary response
   with its body, which is how a client learns to fall back (kubectl retries WebSocket
   refusals over SPDY); a 101 goes back with the next hop's upgrade headers, and from then
   on bytes are piped both ways unchanged until either side closes. The proxy never parses
   the streamed protocol.

On the serving side the request arrived through aiohttp, which only switches protocols for
WebSocket: `relay` takes the connection over (a raw reader installed as the connection's
payload parser before the 101 goes out, so no byte sent after it reaches the HTTP parser),
the same hook aiohttp's own WebSocketResponse uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl as ssl_module
import urllib.parse
from collections.abc import Iterable, Mapping

from aiohttp import web

CHUNK = 64 * 1024
HEAD_LIMIT = 64 * 1024
BODY_LIMIT = 1024 * 1024

# Request headers the next hop needs to negotiate the upgrade; the rest stay behind
# (Authorization is the proxy's business, Host is the next hop's).
UPGRADE_HEADERS = frozenset({
    "connection", "upgrade", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-protocol", "sec-websocket-extensions", "x-stream-protocol-version",
    "user-agent",
})
# Response headers a 101 carries back to the client.
ANSWER_HEADERS = frozenset({
    "connection", "upgrade", "sec-websocket-accept", "sec-websocket-protocol",
    "sec-websocket-extensions", "x-stream-protocol-version",
})


@dataclasses.dataclass
class Upstream:
    """The next hop's answer: status, headers, and the open connection."""
    status: int
    reason: str
    headers: list[tuple[str, str]]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def close(self) -> None:
        self.writer.close()


def is_upgrade(headers: Mapping[str, str]) -> bool:
    return "upgrade" in headers.get("Connection", "").lower() and bool(headers.get("Upgrade"))


def upgrade_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.items() if k.lower() in UPGRADE_HEADERS]


async def dial(url: str, method: str, headers: Iterable[tuple[str, str]], *,
               ssl: ssl_module.SSLContext | None = None, timeout: float = 10.0) -> Upstream:
    """Send a bodiless request to `url` and read the response head. OSError or
    asyncio.TimeoutError when the next hop cannot be reached or does not answer."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            parts.hostname, port, ssl=ssl if secure else None, limit=HEAD_LIMIT,
            server_hostname=parts.hostname if secure else None)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("host", "content-length")]
        if method in ("POST", "PUT"):
            lines.append("Content-Length: 0")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
    except BaseException:
        writer.close()
        raise
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        writer.close()
        raise OSError(f"not an HTTP response from {parts.netloc}: {status_line!r}")
    answer = []
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            answer.append((name.strip(), value.strip()))
    return Upstream(int(code), reason, answer, reader, writer)


async def read_body(upstream: Upstream, timeout: float = 5.0) -> bytes:
    """The body of a non-101 answer (Content-Length, chunked, or up to EOF), at most
    `BODY_LIMIT` bytes; a server that neither says how long it is nor closes gets `timeout`."""
    reader = upstream.reader
    try:
        length = upstream.header("Content-Length")
        if length is not None:
            async with asyncio.timeout(timeout):
                return await reader.readexactly(min(int(length), BODY_LIMIT))
        if (upstream.header("Transfer-Encoding") or "").lower() == "chunked":
            body = b""
            while len(body) < BODY_LIMIT:
                async with asyncio.timeout(timeout):
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        break
                    body += await reader.readexactly(size + 2)
                body = body[:-2]
            return body
        async with asyncio.timeout(timeout):
            return await reader.read(BODY_LIMIT)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, OSError):
        return b""
    finally:
        upstream.close()


class _RawParser:
    """Stands in for aiohttp's payload parser on a taken-over connection: every byte the
    client sends goes to `reader`."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.reader.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self.reader.feed_eof()


async def relay(request: web.Request, upstream: Upstream) -> web.StreamResponse:
    """Answer `request` with `upstream`'s answer; after a 101, pipe until either side
    closes. Closes `upstream`."""
    if upstream.status != 101:
        body = await read_body(upstream)
        content_type = upstream.header("Content-Type") or "text/plain"
        return web.Response(status=upstream.status, body=body,
                            headers={"Content-Type": content_type})
    protocol, transport = request.protocol, request.transport
    if protocol is None or transport is None:
        upstream.close()
        raise ConnectionResetError("the client went away")
    incoming = asyncio.StreamReader(limit=CHUNK)
    protocol.set_parser(_RawParser(incoming))  # before the 101: nothing may reach HTTP
    protocol.keep_alive(False)
    response = web.StreamResponse(status=101, reason=upstream.reason or "Switching Protocols")
    for name, value in upstream.headers:
        if name.lower() in ANSWER_HEADERS:
            response.headers.add(name, value)
    response.force_close()
    try:
        outgoing = await response.prepare(request)
        await pipe(incoming, upstream.writer, upstream.reader, outgoing)
    finally:
        upstream.close()
    return response


async def pipe(client_reader: asyncio.StreamReader, upstream_writer: asyncio.StreamWriter,
               upstream_reader: asyncio.StreamReader, client_writer) -> None:
    """Copy both ways; when one direction ends (EOF or error) the other is stopped, after
    what was read is written."""

    async def up() -> None:
        while data := await client_reader.read(CHUNK):
            upstream_writer.write(data)
            await upstream_writer.drain()

    async def down() -> None:
        while data := await upstream_reader.read(CHUNK):
            await client_writer.write(data)
        with contextlib.suppress(Exception):
            await client_writer.drain()

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
