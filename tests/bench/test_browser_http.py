"""bench/browser_http.py, the simulated browser tab of fault_bench's quiz traffic, against a small
server on loopback: Content-Length and chunked bodies, cookies kept by name, one kept connection,
and a connection the server closed between requests replaced once, as a browser does."""

import asyncio

import pytest

from bench.browser_http import BrowserHTTP, HTTPError

ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: csrftoken=abc; Path=/; SameSite=Lax\r\n\r\nhello",
    b"HTTP/1.1 302 Found\r\nLocation: /quiz/attempts/7/1/\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n4;x=1\r\ndefg\r\n0\r\n\r\n",
]


async def serve(answers: list[bytes], seen: list[bytes], *, close_after: int | None = None):
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        served = 0
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
            length = lengths[0] if lengths else 0
            seen.append(head + await reader.readexactly(length))
            writer.write(answers.pop(0))
            await writer.drain()
            served += 1
            if close_after is not None and served == close_after:
                break  # a keep-alive timeout: the next request finds the connection closed
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


def test_bodies_cookies_and_one_kept_connection():
    async def main():
        seen = []
        server, port, connections = await serve(list(ANSWERS), seen)
        http = BrowserHTTP("127.0.0.1", port, cookies={"sessionid": "s1"}, headers={"Referer": "http://x/"})
        first = await http.request("GET", "/quiz/quizzes/")
        second = await http.request("POST", "/quiz/start/", {"csrfmiddlewaretoken": http.cookies["csrftoken"], "t": ["a b", "c"]})
        await http.aclose()
        server.close()
        return first, second, seen, connections

    first, second, seen, connections = asyncio.run(main())
    assert (first.status_code, first.body) == (200, b"hello")
    assert (second.status_code, second.body, second.headers["location"]) == (302, b"abcdefg", "/quiz/attempts/7/1/")
    assert len(connections) == 1  # both requests on one connection
    assert b"Cookie: sessionid=s1\r\n" in seen[0] and b"Referer: http://x/" in seen[0]
    assert b"Cookie: sessionid=s1; csrftoken=abc\r\n" in seen[1]
    assert seen[1].endswith(b"\r\n\r\ncsrfmiddlewaretoken=abc&t=a+b&t=c")
    assert b"Content-Type: application/x-www-form-urlencoded" in seen[1]


def test_a_connection_closed_by_the_server_is_replaced_once_and_a_dead_server_is_an_error():
    async def main():
        seen = []
        server, port, connections = await serve(list(ANSWERS), seen, close_after=1)
        http = BrowserHTTP("127.0.0.1", port)
        await http.request("GET", "/a")
        await asyncio.sleep(0.05)
        again = await http.request("GET", "/b")  # the kept connection is gone: sent again on a new one
        await http.aclose()
        server.close()
        await server.wait_closed()
        with pytest.raises(HTTPError):
            await BrowserHTTP("127.0.0.1", port).request("GET", "/c")
        return again, connections

    again, connections = asyncio.run(main())
    assert again.status_code == 302 and len(connections) == 2
