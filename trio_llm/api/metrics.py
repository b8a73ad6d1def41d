"""Prometheus text metrics for GET /metrics: requests, tokens, speed, queue and loaded models.

Counters live in one small in-process object (no client library needed); the queue depth and
the loaded models are asked of the backend at scrape time. Routes are labelled by their rule
(`/api/blobs/<digest>`), never by the raw path, so label sets stay small.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


@dataclass
class Metrics:
    """Counters the API updates as it answers; `render` writes the exposition text."""

    requests: dict[tuple[str, str, int], int] = field(default_factory=lambda: defaultdict(int))
    request_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    in_flight: int = 0
    prompt_tokens: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    generated_tokens: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    eval_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    last_tokens_per_second: dict[str, float] = field(default_factory=dict)
    generations: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        self.request_seconds[route] += seconds

    def observe_generation(self, model: str, done_reason: str, prompt_tokens: int,
                           generated_tokens: int, eval_duration_ns: int) -> None:
        """Count one finished generation (its final chunk's statistics)."""
        self.generations[(model, done_reason)] += 1
        self.prompt_tokens[model] += prompt_tokens
        self.generated_tokens[model] += generated_tokens
        self.eval_seconds[model] += eval_duration_ns / 1e9
        if generated_tokens and eval_duration_ns:
            self.last_tokens_per_second[model] = generated_tokens / (eval_duration_ns / 1e9)

    def render(self, queue_depth: int, loaded_models: list[str]) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        family("trio_llm_http_requests_total", "counter", "HTTP requests answered.")
        for (method, route, status), count in sorted(self.requests.items()):
            labels = _labels(method=method, route=route, status=str(status))
            lines.append(f"trio_llm_http_requests_total{labels} {count}")
        family("trio_llm_http_request_seconds_total", "counter",
               "Time spent answering requests (until the response started), by route.")
        for route, seconds in sorted(self.request_seconds.items()):
            lines.append(f"trio_llm_http_request_seconds_total{_labels(route=route)} "
                         f"{seconds:.6f}")
        family("trio_llm_http_requests_in_flight", "gauge", "Requests being answered now.")
        lines.append(f"trio_llm_http_requests_in_flight {self.in_flight}")
        family("trio_llm_generations_total", "counter", "Finished generations by done_reason.")
        for (model, reason), count in sorted(self.generations.items()):
            lines.append(f"trio_llm_generations_total{_labels(model=model, done_reason=reason)}"
                         f" {count}")
        family("trio_llm_prompt_tokens_total", "counter", "Prompt tokens evaluated.")
        for model, count in sorted(self.prompt_tokens.items()):
            lines.append(f"trio_llm_prompt_tokens_total{_labels(model=model)} {count}")
        family("trio_llm_generated_tokens_total", "counter", "Tokens generated.")
        for model, count in sorted(self.generated_tokens.items()):
            lines.append(f"trio_llm_generated_tokens_total{_labels(model=model)} {count}")
        family("trio_llm_eval_seconds_total", "counter", "Time spent generating tokens.")
        for model, seconds in sorted(self.eval_seconds.items()):
            lines.append(f"trio_llm_eval_seconds_total{_labels(model=model)} {seconds:.6f}")
        family("trio_llm_tokens_per_second", "gauge", "Decode speed of the last generation.")
        for model, speed in sorted(self.last_tokens_per_second.items()):
            lines.append(f"trio_llm_tokens_per_second{_labels(model=model)} {speed:.3f}")
        family("trio_llm_queue_depth", "gauge", "Requests waiting for a slot.")
        lines.append(f"trio_llm_queue_depth {queue_depth}")
        family("trio_llm_loaded_models", "gauge", "Models loaded now.")
        lines.append(f"trio_llm_loaded_models {len(loaded_models)}")
        family("trio_llm_model_loaded", "gauge", "1 for each loaded model.")
        for name in sorted(loaded_models):
            lines.append(f"trio_llm_model_loaded{_labels(model=name)} 1")
        return "\n".join(lines) + "\n"
