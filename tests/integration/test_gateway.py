"""The gateway: Supabase's URL layout, streaming bodies, errors as JSON."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import pytest

from supasaasy.db import Database
from supasaasy.devstack import StackInfo
from supasaasy.devstack.processes import free_port, spawn, stop, tcp_accepts, wait_until
from supasaasy.models import Entity


class Echo(BaseHTTPRequestHandler):
    """Answers with what it received: method, path, headers, body size and digest."""

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while (size := int(self.rfile.readline().strip(), 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(length)
        answer = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        ).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = _echo

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway with one function, `echo`, and a PostgREST upstream that is down."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    log = Path(tmp_path_factory.mktemp("gateway")) / "gateway.log"
    process = spawn(
        [sys.executable, "-m", "supasaasy.devstack.gateway", "--port", str(port),
         "--rest", f"http://127.0.0.1:{free_port()}",
         "--function", f"echo=http://127.0.0.1:{server.server_port}"],
        log=log,
    )  # fmt: skip
    try:
        wait_until(lambda: tcp_accepts(port), what="gateway", process=process, log=log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        server.shutdown()


def test_functions_are_routed_with_path_query_and_body(gateway: str) -> None:
    body = bytes(range(256)) * (6 * 4096)  # 6 MB
    response = httpx.post(
        f"{gateway}/functions/v1/echo/sync/jobs/abc?verbose=1",
        content=body,
        headers={"apikey": "k1"},
        timeout=30,
    )
    assert response.status_code == 201
    echoed = response.json()
    assert echoed["path"] == "/sync/jobs/abc?verbose=1"
    assert echoed["size"] == len(body)
    assert echoed["sha256"] == hashlib.sha256(body).hexdigest()
    assert echoed["authorization"] == "Bearer k1"  # apikey alone authenticates, as on Supabase


def test_streamed_request_bodies_arrive_whole(gateway: str) -> None:
    chunks = [bytes([i]) * 65536 for i in range(64)]  # 4 MB in chunked encoding
    response = httpx.put(f"{gateway}/functions/v1/echo", content=iter(chunks), timeout=30)
    assert response.status_code == 201
    assert response.json()["size"] == 64 * 65536
    assert response.json()["sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_unknown_routes_and_functions_are_json_404s(gateway: str) -> None:
    for path in ("/functions/v1/nope", "/functions/v1/nope/sync", "/elsewhere"):
        response = httpx.get(gateway + path)
        assert response.status_code == 404
        assert response.json()["success"] is False
    assert "nope" in httpx.get(f"{gateway}/functions/v1/nope").json()["error"]


def test_an_upstream_that_is_down_is_a_json_502(gateway: str) -> None:
    response = httpx.get(f"{gateway}/rest/v1/sync_jobs")
    assert response.status_code == 502
    assert response.json() == {
        "success": False,
        "error": "upstream rest is unavailable: ClientConnectorError",
    }


def test_requests_are_counted_per_route(gateway: str) -> None:
    httpx.post(f"{gateway}/_gateway/stats/reset")
    for _ in range(3):
        httpx.get(f"{gateway}/functions/v1/echo")
    httpx.get(f"{gateway}/rest/v1/anything")
    assert httpx.get(f"{gateway}/_gateway/stats").json() == {"functions/echo": 3, "rest": 1}


def test_large_writes_reach_postgrest_through_the_gateway(
    stack: StackInfo, db: Database, app_key: str
) -> None:
    blob = "x" * 8000
    batch = [
        Entity(app_key=app_key, collection_key="big", external_id=str(i),
               raw_payload={"i": i, "blob": blob})
        for i in range(1000)
    ]  # fmt: skip
    assert db.upsert_entities(batch) == 1000  # about 8 MB in one request
    with psycopg.connect(stack.database_url) as conn:
        row = conn.execute(
            "select count(*), sum(length(raw_payload->>'blob')) from supasaasy.entities"
            " where app_key = %s",
            (app_key,),
        ).fetchone()
    assert row == (1000, 8_000_000)


def test_service_key_reads_and_anon_key_does_not(stack: StackInfo) -> None:
    url = f"{stack.supabase_url}/rest/v1/sync_jobs"
    profile = {"Accept-Profile": "supasaasy"}
    ok = httpx.get(url, headers={"apikey": stack.service_role_key, **profile})
    assert ok.status_code == 200 and isinstance(ok.json(), list)
    refused = httpx.get(url, headers={"apikey": stack.anon_key, **profile})
    assert refused.status_code == 401
    assert refused.json()["message"] == "permission denied for schema supasaasy"
