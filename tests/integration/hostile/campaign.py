"""The recorder every hostile request goes through, and the checks that end each part of the
campaign.

`Campaign.send` sends one request over real HTTPS (the path exactly as given: nothing
normalizes `..` or `%2F` on the way) and keeps every answer: a 5xx, a 4xx that is not a
Kubernetes `Status` (only upstream's plain-text 429 and the HTTP parser's own 400 for a
request it cannot parse are not), or a hang is a finding. `Campaign.raw` writes bytes on a
TLS connection, for what no HTTP client sends (NUL in a path). `Campaign.finish` then checks
what must hold at the end: no finding, the server still answers (`/readyz`, a list), no
error or traceback in the log, and nothing stored since the part began except what
`allowed(key, object)` accepts, every stored object strict JSON with a valid name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import yarl

from k8py.server.apiserver import bodies

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
TOO_MANY = b"Too many requests, please try again later.\n"


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def status_object(self) -> dict[str, Any] | None:
        try:
            decoded = json.loads(self.body)
        except ValueError:
            return None
        return decoded if isinstance(decoded, dict) and decoded.get("kind") == "Status" \
            else None


class Campaign:
    def __init__(self, server, session: aiohttp.ClientSession, *, timeout: float = 30.0):
        self.server, self.session, self.timeout = server, session, timeout
        self.findings: list[str] = []
        self.count = 0
        self.codes: dict[int, int] = {}
        self.slowest = (0.0, "")
        self.start_revision = 0

    async def begin(self) -> "Campaign":
        self.start_revision = (await self.server.store.range("/registry/", limit=1)).revision
        return self

    async def send(self, method: str, path: str, body: bytes | None = None,
                   content_type: str | None = "application/json", label: str = "",
                   headers: dict[str, str] | None = None) -> Answer:
        sent = dict(headers or {})
        if body is not None and content_type is not None:
            sent["Content-Type"] = content_type
        url = yarl.URL(self.server.url + path, encoded=True)
        what = f"{method} {path[:120]} {label}".strip()
        start = time.monotonic()
        try:
            async with self.session.request(method, url, data=body, headers=sent,
                                            timeout=aiohttp.ClientTimeout(
                                                total=self.timeout)) as response:
                answer = Answer(response.status, dict(response.headers), await response.read())
        except asyncio.TimeoutError:
            self.findings.append(f"no answer within {self.timeout} s: {what}")
            return Answer(0, {}, b"")
        except aiohttp.ClientError as exc:
            self.findings.append(f"connection failed ({exc!r}): {what}")
            return Answer(0, {}, b"")
        self._record(answer, what, time.monotonic() - start)
        return answer

    async def raw(self, request: bytes, label: str) -> Answer:
        """Bytes on a fresh TLS connection; the answer as far as it can be read."""
        host, port = self.server.url.removeprefix("https://").rsplit(":", 1)
        start = time.monotonic()
        reader, writer = await asyncio.open_connection(host, int(port), ssl=self.server.ssl())
        try:
            writer.write(request)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), self.timeout)  # Connection: close
        except asyncio.TimeoutError:
            self.findings.append(f"no answer within {self.timeout} s: {label}")
            return Answer(0, {}, b"")
        except (ConnectionError, ssl.SSLError):  # closed without close_notify: keep what came
            data = bytes(reader._buffer)  # what arrived before the close
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
        answer = Answer(int(status_line.split()[1]), headers, body)
        if headers.get("Transfer-Encoding") == "chunked":  # one chunk, then the last
            answer.body = body.split(b"\r\n", 1)[-1].rsplit(b"\r\n0\r\n", 1)[0]
        self._record(answer, label, time.monotonic() - start)
        return answer

    def _record(self, answer: Answer, what: str, seconds: float) -> None:
        self.count += 1
        self.codes[answer.status] = self.codes.get(answer.status, 0) + 1
        if seconds > self.slowest[0]:
            self.slowest = (seconds, what)
        if answer.status >= 500:
            self.findings.append(f"{answer.status}: {what}: {answer.body[:300]!r}")
        elif answer.status >= 400:
            status = answer.status_object()
            plain_429 = answer.status == 429 and answer.body == TOO_MANY
            parser_400 = answer.status == 400 and answer.headers.get(
                "Content-Type", "").startswith("text/plain")
            if status is None and not plain_429 and not parser_400:
                self.findings.append(f"{answer.status} without a Status: {what}: "
                                     f"{answer.body[:300]!r}")
            elif status is not None and (status.get("code") != answer.status or
                                         not status.get("message")):
                self.findings.append(f"a Status that does not match its answer: {what}: "
                                     f"{answer.body[:300]!r}")

    def report(self, title: str) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.codes.items()))
        return (f"{title}: {self.count} requests ({codes}); slowest {self.slowest[0]:.2f} s "
                f"({self.slowest[1][:80]})")

    async def finish(self, records: list[logging.LogRecord],
                     allowed: Callable[[str, dict], bool] = lambda key, obj: False) -> None:
        assert self.findings == [], "\n".join(self.findings[:30])
        ready = await self.send("GET", "/readyz", label="still ready")
        assert ready.status == 200, ready
        listed = await self.send("GET", "/api/v1/configmaps?limit=500", label="still listing")
        assert listed.status == 200 and "items" in json.loads(listed.body)
        loud = [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
        assert loud == [], [f"{r.name}: {r.getMessage()[:300]}" for r in loud]
        stored = await self.server.store.range("/registry/")
        for kv in stored.items:
            if kv.mod_revision <= self.start_revision:
                continue
            try:
                obj = bodies.decode(kv.value, "application/json")
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                raise AssertionError(f"{kv.key} holds what no client can read: {exc}") from None
            name = obj.get("metadata", {}).get("name", "")
            assert kv.key.endswith("/" + name), (kv.key, name)
            assert DNS_SUBDOMAIN.match(name) or kv.key.startswith("/registry/rbac"), kv.key
            assert allowed(kv.key, obj), f"stored, and should not be: {kv.key}"
