"""The local gateway, in process: a request it cannot parse is logged without header values."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp.test_utils import TestServer

from supasaasy.devstack.gateway import create_app

SECRET = "Zq7vS3cr3tValue0123456789"  # shaped like no known key, so only the gateway hides it

MALFORMED = [
    (b"Authorization: Bearer " + SECRET.encode() + b"\x00tail", "Invalid header value char"),
    (b"apikey: " + SECRET.encode() + b"\x01", "Invalid header value char"),
    (b"X-K\x00ey: " + SECRET.encode(), "Invalid header token"),
    (b"apikey: " + SECRET.encode() + b"\rx", "Missing expected LF after header value"),
]


async def send(header: bytes) -> bytes:
    server = TestServer(create_app("http://127.0.0.1:9", {}))
    await server.start_server()
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"GET /functions/v1/sync HTTP/1.1\r\nHost: gw\r\n" + header + b"\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer
    finally:
        await server.close()


@pytest.mark.parametrize(("header", "reason"), MALFORMED)
def test_a_malformed_header_is_logged_without_its_value(
    caplog: pytest.LogCaptureFixture, header: bytes, reason: str
) -> None:
    with caplog.at_level(logging.DEBUG):
        answer = asyncio.run(send(header))
    assert answer.startswith(b"HTTP/1.0 400 ")
    assert SECRET not in caplog.text
    logged = [r for r in caplog.records if r.name in ("supasaasy.gateway", "aiohttp.server")]
    assert [r.getMessage() for r in logged] == [
        f"Error handling request from 127.0.0.1: 400 BadHttpMessage: {reason}"
    ]
    assert all(r.exc_info is None for r in logged)
