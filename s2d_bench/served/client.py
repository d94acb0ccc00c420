"""The HTTP client of a served teacher: vLLM's OpenAI-compatible routes, over a network that fails.

A training stage sends thousands of requests; a rolling restart, a dropped connection or an
overloaded server (503) must cost a retry, not the stage. So every request has a timeout, and a
dropped connection, a timeout, 429 or any 5xx is tried again after 1, 2, 4 ... seconds (capped at
30), `retries` times. What cannot succeed by trying again (a 4xx: a limit the server enforces, a
model it does not serve) fails at once. Either way the error is one line naming the URL.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

import httpx

from s2d_bench.errors import UserError

T = TypeVar("T")
R = TypeVar("R")
RETRIED_STATUS = {429, 500, 502, 503, 504}
# vLLM's sampling fields at the values that change nothing. A client sends them all (vLLM would otherwise take the model's
# generation_config.json defaults); `s2d-bench serve` accepts them at these values and refuses the fields otherwise.
NEUTRAL = {"top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
MAX_BACKOFF_S = 30.0


class ServerError(UserError):
    """The served teacher cannot answer: unreachable, refusing, or another model than the config names."""


def base_url(url: str) -> str:
    """The server's root: `http://host:8000`, whether the config wrote it with /v1 (OpenAI clients' habit) or without."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class Client:
    """Requests to one server, each retried on transient failures; `map` sends many at once."""

    def __init__(self, url: str, timeout_s: float = 300.0, retries: int = 5, concurrency: int = 16, backoff_s: float = 1.0) -> None:
        self.url = base_url(url)
        self.retries, self.concurrency, self.backoff_s = retries, concurrency, backoff_s
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)), limits=limits)
        self.retried = 0  # requests tried again, over this client's life (the stage logs it)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """fn over items with `concurrency` requests in flight, results in order; the first failure is raised."""
        items = list(items)
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        where = f"teacher server {self.url}{path}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
            try:
                response = self.http.request(method, path, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {self.http.timeout.read:g} s"
                continue
            except httpx.TransportError as exc:  # refused, reset, dropped mid-answer
                last = f"unreachable ({type(exc).__name__}: {str(exc) or 'connection failed'})"
                continue
            if response.status_code in RETRIED_STATUS:
                last = f"answered {response.status_code} ({_message(response)})"
                continue
            if response.status_code >= 400:
                raise ServerError(f"{where} refused the request: {response.status_code} {_message(response)}")
            return response.json()
        raise ServerError(f"{where}: {last} after {self.retries + 1} tries; start the server (vllm serve MODEL --max-logprobs K, "
                          "or s2d-bench serve MODEL) or fix teacher.server")


def _message(response: httpx.Response) -> str:
    """The server's own reason: vLLM's `{"error": {"message": ...}}`, else the body's first line."""
    try:
        data = response.json()
    except ValueError:
        return (response.text.strip().splitlines() or [response.reason_phrase])[0][:300]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    return str(data.get("detail", data) if isinstance(data, dict) else data)[:300]
