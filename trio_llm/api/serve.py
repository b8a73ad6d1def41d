"""Serving the app with Hypercorn's trio worker: binding, start-up report, signals, draining.

`serve()` runs inside a nursery; `await nursery.start(serve, backend, host)` returns the bound
address (bind port 0 in tests). SIGINT and SIGTERM stop accepting connections, give in-flight
responses `graceful_timeout` seconds to finish, close idle connections, and return.

It also repairs a Hypercorn 0.18 + Quart-Trio defect (pgjones/hypercorn#330): the server never
closed a connection itself, so `Connection: close`, HTTP/1.0 and idle keep-alive sockets stayed
open until the client left. Hypercorn's end-of-response bookkeeping runs in the app's task,
which Quart-Trio cancels when the disconnect event arrives during that very send; the fix runs
that bookkeeping shielded from cancellation.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer

from trio_llm import __version__, config
from trio_llm.api.app import MAX_JSON_BODY, create_app
from trio_llm.api.backend import Backend
from trio_llm.config import Host, parse_host

log = logging.getLogger("trio_llm.server")

_SHIELDED = "_trio_llm_shielded"


def shield_connection_bookkeeping() -> None:
    """Make Hypercorn's per-connection send/close/idle bookkeeping immune to the app task's
    cancellation (idempotent; applies to the trio worker's TCPServer class)."""
    original = TCPServer.protocol_send
    if getattr(original, _SHIELDED, False):
        return

    async def protocol_send(self: TCPServer, event: Any) -> None:
        with trio.CancelScope(shield=True):
            await original(self, event)

    setattr(protocol_send, _SHIELDED, True)
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]


def hypercorn_config(host: Host, *, keep_alive_timeout: float,
                     graceful_timeout: float) -> Config:
    hc = Config()
    hc.bind = [host.bind]
    hc.keep_alive_timeout = keep_alive_timeout
    hc.graceful_timeout = graceful_timeout
    hc.accesslog = None
    hc.errorlog = logging.getLogger("trio_llm.hypercorn")
    hc.include_server_header = False
    return hc


async def serve(backend: Backend, host: Host | str | None = None, *,
                keep_alive_timeout: float = 5.0, graceful_timeout: float = 3.0,
                shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
                origins: list[str] | None = None, max_body_bytes: int = MAX_JSON_BODY,
                api_keys: Mapping[str, str] | None = None,
                task_status: trio.TaskStatus[Host] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the API until SIGINT/SIGTERM (or `shutdown_trigger` returns).

    `host` defaults to OLLAMA_HOST, `origins` (extra CORS origins) to OLLAMA_ORIGINS,
    `api_keys` (key -> scope) to OLLAMA_API_KEYS; `max_body_bytes` bounds JSON bodies (blob
    uploads are unbounded).
    `task_status.started` receives the bound address."""
    if host is None:
        host = config.get("OLLAMA_HOST")
    elif isinstance(host, str):
        host = parse_host(host)
    assert isinstance(host, Host)
    shield_connection_bookkeeping()
    app = create_app(backend, origins=origins, max_body_bytes=max_body_bytes,
                     bind_host=host.host, api_keys=api_keys)
    hc = hypercorn_config(host, keep_alive_timeout=keep_alive_timeout,
                          graceful_timeout=graceful_timeout)

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def until_signal() -> None:
            async for signum in signals:
                log.info("received %s: finishing in-flight responses, then stopping",
                         signal.Signals(signum).name)
                return

        async def stop_when() -> None:
            if shutdown_trigger is None:
                await until_signal()
                return
            async with trio.open_nursery() as nursery:
                async def first(wait: Callable[[], Awaitable[Any]]) -> None:
                    await wait()
                    nursery.cancel_scope.cancel()
                nursery.start_soon(first, until_signal)
                nursery.start_soon(first, shutdown_trigger)

        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(hypercorn.trio.serve, app, hc,
                                                shutdown_trigger=stop_when))
            bound = parse_host(binds[0])
            log.info("Listening on %s (version %s)", bound.bind, __version__)
            settings = " ".join(f"{k}={v.url if isinstance(v, Host) else v}"
                                for k, v in config.snapshot().items())
            log.info("server config %s", settings)
            task_status.started(bound)
    log.info("server stopped")

