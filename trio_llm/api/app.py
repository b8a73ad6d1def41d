"""The Quart-Trio application: routes, error map, CORS and metrics over one backend.

Quart's defaults are wrong for an LLM server and are changed here: responses never time out
(a stream may run for hours), request bodies have no read deadline, JSON bodies may be large
(images) and blob uploads are unlimited, and JSON keeps key order and Go's compact form.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from quart import Response, g, request
from quart_trio import QuartTrio
from quart_trio.wrappers import TrioRequest

from trio_llm import config
from trio_llm.api import (
    anthropic,
    auth,
    cors,
    errors,
    hosts,
    ollama,
    openai,
    rerank,
    responses,
    tokenize,
)
from trio_llm.api.backend import Backend
from trio_llm.api.metrics import CONTENT_TYPE, Metrics
from trio_llm.api.streaming import json_response

MAX_JSON_BODY = 256 * 1024 * 1024  # base64 images in chat requests can be large
UNLIMITED_PATHS = ("/api/blobs/",)  # uploads of whole model files: no size or time limit


class ServerRequest(TrioRequest):
    """Quart-Trio's request, with no body limits on blob uploads."""

    def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
        if path.startswith(UNLIMITED_PATHS):
            kwargs["max_content_length"] = None
            kwargs["body_timeout"] = None
        super().__init__(method, scheme, path, *args, **kwargs)


def create_app(backend: Backend, *, origins: Sequence[str] | None = None,
               max_body_bytes: int = MAX_JSON_BODY, metrics: Metrics | None = None,
               bind_host: str | None = None, allowed_hosts: Sequence[str] | None = None,
               api_keys: Mapping[str, str] | None = None) -> QuartTrio:
    """The application. `origins` are the extra CORS origins (default: OLLAMA_ORIGINS);
    `bind_host` is the address served (a loopback one turns the Host check on), with
    `allowed_hosts` (default: OLLAMA_ALLOWED_HOSTS); `api_keys` maps key -> scope (default:
    OLLAMA_API_KEYS; empty: no authentication)."""
    app = QuartTrio("trio_llm")
    app.request_class = ServerRequest
    app.config.update(RESPONSE_TIMEOUT=None, BODY_TIMEOUT=None,
                      MAX_CONTENT_LENGTH=max_body_bytes)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    metrics = metrics if metrics is not None else Metrics()
    app.extensions["trio_llm.metrics"] = metrics

    @app.before_request
    async def start_clock() -> None:
        g.started = time.perf_counter()
        metrics.in_flight += 1

    @app.after_request
    async def count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        started = getattr(g, "started", time.perf_counter())
        metrics.observe_request(request.method, rule, response.status_code,
                                time.perf_counter() - started)
        return response

    @app.teardown_request
    async def finish(_exc: BaseException | None) -> None:
        if getattr(g, "started", None) is not None:
            metrics.in_flight -= 1

    extra = list(origins) if origins is not None else config.get("OLLAMA_ORIGINS")
    host_policy = hosts.HostPolicy(bind_host, allowed_hosts if allowed_hosts is not None
                                   else config.get("OLLAMA_ALLOWED_HOSTS"))
    hosts.install(app, host_policy)
    cors.install(app, cors.CorsPolicy(extra), host_policy)
    auth.install(app, auth.KeyRing(api_keys if api_keys is not None
                                   else config.get("OLLAMA_API_KEYS")))
    errors.register(app)
    app.register_blueprint(ollama.blueprint(backend, metrics))
    app.register_blueprint(openai.blueprint(backend, metrics))
    app.register_blueprint(responses.blueprint(backend, metrics))
    app.register_blueprint(anthropic.blueprint(backend, metrics))
    app.register_blueprint(tokenize.blueprint(backend))
    app.register_blueprint(rerank.blueprint(backend))

    @app.get("/metrics")
    async def prometheus() -> Response:
        loaded = [m.name for m in await backend.ps()]
        text = metrics.render(backend.queue_depth(), loaded)
        return Response(text, content_type=CONTENT_TYPE)

    @app.route("/health", methods=["GET", "HEAD"])
    async def health() -> Response:
        """Readiness for probes and load balancers (open, like `/`)."""
        loaded = [m.name for m in await backend.ps()]
        return json_response({"status": "ok", "loaded_models": loaded,
                              "queue_depth": backend.queue_depth(),
                              "busy_slots": backend.busy_slots()})

    return app
