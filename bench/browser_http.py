"""A simulated browser tab's HTTP for load benches: one keep-alive HTTP/1.1 connection and a
cookie jar, on asyncio streams.

fault_bench's quiz_burst simulates 200 learners on the same 2 cores as the server it measures, so
the client's CPU is taken from the server. httpx cost ~1.3-2 ms of CPU a request there (a quarter
of the server's own); this costs a small fraction of that. It speaks only what the quiz pages need:
GET and form POSTs, bodies by Content-Length or chunked, cookies by name (one host, one path).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlencode


class HTTPError(Exception):
    """The connection failed or the server's answer could not be read."""


@dataclass
class Response:
    status_code: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class BrowserHTTP:
    host: str
    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 30
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, data: dict | None = None) -> Response:
        body = urlencode(data, doseq=True).encode() if data is not None else b""
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        if data is not None:
            head.append("Content-Type: application/x-www-form-urlencoded")
        head += [f"{name}: {value}" for name, value in self.headers.items()]
        if self.cookies:
            head.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        message = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        # A kept connection the server has just closed (its keep-alive ran out) fails before any
        # byte of an answer: sent again once on a new connection, as a browser does.
        for attempt in (1, 2):
            reused = self._writer is not None
            try:
                return await asyncio.wait_for(self._exchange(message), self.timeout)
            except (ConnectionError, asyncio.IncompleteReadError, HTTPError, TimeoutError) as exc:
                await self.aclose()
                if not (reused and attempt == 1 and not isinstance(exc, TimeoutError)):
                    raise HTTPError(f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def _exchange(self, message: bytes) -> Response:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._writer.write(message)
        await self._writer.drain()
        status_line = await self._reader.readuntil(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HTTPError(f"not an HTTP status line: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        while (line := await self._reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "set-cookie":
                cookie, _, _ = value.partition(";")
                key, _, val = cookie.partition("=")
                self.cookies[key.strip()] = val.strip()
            headers[name] = value
        response = Response(int(parts[1]), headers, await self._read_body(headers))
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return response

    async def _read_body(self, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            return await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await self._reader.readexactly(size))
                await self._reader.readexactly(2)
            await self._reader.readuntil(b"\r\n")  # (no trailers are sent to us)
            return b"".join(chunks)
        body = await self._reader.read()  # until the server closes
        await self.aclose()
        return body

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
