"""The local API gateway, laid out like a Supabase project's URL space.

    /rest/v1/*              -> PostgREST
    /functions/v1/<name>/*  -> the function served at the configured upstream

Bodies stream through in both directions (nothing is buffered or spooled to disk),
connections to upstreams are pooled, and requests are counted per route so that
benchmarks can read how many calls a sync made (`GET /_gateway/stats`).

Run: python -m supasaasy.devstack.gateway --port 54321 --rest http://127.0.0.1:3000 \
        [--function sync=http://127.0.0.1:8081 ...]
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from aiohttp.http_exceptions import HttpProcessingError

# Per RFC 9110 these describe one connection, not the message, so they are not forwarded.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
    )
)


class WithoutHeaderValues(logging.Filter):
    """aiohttp logs a request it cannot parse with its exception, whose message quotes
    the offending line: a header's value (an API key followed by a NUL, say) or the
    request line. Such a record keeps the client's address and the reason alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = re.split(r"[:'\"\n]", exc.message, maxsplit=1)[0].strip()
            record.msg = f"{record.getMessage()}: {exc.code} {type(exc).__name__}: {reason}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


# The server's own log (aiohttp.server by default), without header values.
log = logging.getLogger("supasaasy.gateway")
log.addFilter(WithoutHeaderValues())

UPSTREAMS: web.AppKey[dict[str, str]] = web.AppKey("upstreams")
SESSION: web.AppKey[ClientSession] = web.AppKey("session")
COUNTS: web.AppKey[Counter[str]] = web.AppKey("counts")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"success": False, "error": message}, status=status)


async def _forward(
    request: web.Request, upstream: str, path: str, counter: str
) -> web.StreamResponse:
    request.app[COUNTS][counter] += 1
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    # As on Supabase, an `apikey` header alone authenticates the request.
    if "Authorization" not in request.headers and "apikey" in request.headers:
        headers["Authorization"] = f"Bearer {request.headers['apikey']}"
    url = f"{upstream}/{path}"
    if request.query_string:
        url += f"?{request.query_string}"
    body = request.content if request.body_exists else None
    try:
        async with request.app[SESSION].request(
            request.method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream_response:
            response = web.StreamResponse(
                status=upstream_response.status,
                reason=upstream_response.reason,
                headers={
                    k: v
                    for k, v in upstream_response.headers.items()
                    if k.lower() not in HOP_BY_HOP
                },
            )
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except OSError as exc:  # connection refused or reset by the upstream
        return _error(502, f"upstream {counter} is unavailable: {exc.__class__.__name__}")


async def rest(request: web.Request) -> web.StreamResponse:
    return await _forward(
        request, request.app[UPSTREAMS]["rest"], request.match_info["tail"], "rest"
    )


async def function(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    upstream = request.app[UPSTREAMS].get(f"functions/{name}")
    if upstream is None:
        return _error(404, f"function not found: {name}")
    tail = request.match_info["tail"].lstrip("/")
    return await _forward(request, upstream, tail, f"functions/{name}")


async def stats(request: web.Request) -> web.Response:
    counts: Counter[str] = request.app[COUNTS]
    return web.json_response(counts)


async def reset_stats(request: web.Request) -> web.Response:
    request.app[COUNTS].clear()
    return web.json_response({})


async def not_found(request: web.Request) -> web.Response:
    return _error(404, f"no route for {request.path}")


def create_app(rest_upstream: str, functions: dict[str, str]) -> web.Application:
    # Bodies stream (the upstream sets limits); requests are logged without header values.
    app = web.Application(client_max_size=0, handler_args={"logger": log})
    app[UPSTREAMS] = {"rest": rest_upstream.rstrip("/")} | {
        f"functions/{name}": url.rstrip("/") for name, url in functions.items()
    }
    app[COUNTS] = Counter[str]()

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        connector = TCPConnector(limit=0, keepalive_timeout=60)
        async with ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=ClientTimeout(total=None, sock_connect=5),
        ) as session:
            app[SESSION] = session
            yield

    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/rest/v1/{tail:.*}", rest)
    app.router.add_route("*", "/functions/v1/{name}{tail:(/.*)?}", function)
    app.router.add_get("/_gateway/stats", stats)
    app.router.add_post("/_gateway/stats/reset", reset_stats)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local API gateway with Supabase's URL layout.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rest", required=True, help="PostgREST base URL")
    parser.add_argument(
        "--function",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="route /functions/v1/NAME to URL (repeatable)",
    )
    args = parser.parse_args(argv)
    functions = dict(item.split("=", 1) for item in args.function)
    web.run_app(
        create_app(args.rest, functions),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        handle_signals=True,
    )


if __name__ == "__main__":
    main()
