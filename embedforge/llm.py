"""An OpenAI-compatible chat-completions client, as vLLM, Ollama, llama.cpp's server, TGI and hosted APIs speak it.

Every request holds a slot of the endpoint's Prefect concurrency limit (and of its rate limit, when set),
so the runs of several models share one endpoint's capacity. 429, 5xx and time-outs are retried with
back-off, waiting at least what Retry-After says; 400, 401, 403 and 404 stop at once, in one line that
names the endpoint and the status. The key is never logged or written.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlparse

import httpx

from embedforge.config.corpus import LLMConfig
from embedforge.errors import EmbedforgeError
from embedforge.logs import run_logger
from embedforge.redact import remember

RETRIED = {408, 409, 425, 429, 500, 502, 503, 504}
# An endpoint that refused (401, 404 ...) within a flow run: its other batches stop without sending.
_REFUSED: dict[tuple[str, str | None], EmbedforgeError] = {}


@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def limit_name(config: LLMConfig) -> str:
    """The Prefect concurrency limit of an endpoint: one per host and port, whoever calls it."""
    url = urlparse(config.base_url)
    return "llm-" + re.sub(r"[^a-z0-9-]+", "-", f"{url.hostname}-{url.port or ''}".lower()).strip("-")


def api_key(config: LLMConfig) -> str | None:
    """The endpoint's key, remembered by the redaction step: an endpoint may echo it back in any reply."""
    if config.api_key_secret:
        from prefect.blocks.system import Secret

        try:
            key = Secret.load(config.api_key_secret).get()
        except ValueError:
            raise EmbedforgeError(
                f"corpus.generate.llm.api_key_secret: no Prefect Secret block named {config.api_key_secret!r}"
            ) from None
    else:
        key = os.environ.get(config.api_key_env) if config.api_key_env else None
    remember(key)
    return key


def unset_key(config: LLMConfig) -> str:
    """Why no key was sent, in the user's terms."""
    if config.api_key_env:
        return f"the environment variable {config.api_key_env} (corpus.generate.llm.api_key_env) is not set"
    return "set corpus.generate.llm.api_key_env or api_key_secret"


def retry_after(response: httpx.Response | None) -> float | None:
    """Seconds the server asks to wait: Retry-After as seconds or as an HTTP date."""
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)


def _refused(config: LLMConfig, response: httpx.Response) -> EmbedforgeError:
    detail = response.text[:200].replace("\n", " ")
    if response.status_code in (401, 403) and "authorization" not in response.request.headers:
        detail = f"no key was sent: {unset_key(config)}"
    return EmbedforgeError(
        f"corpus.generate.llm: {config.base_url} answered HTTP {response.status_code} for model {config.model!r}; "
        f"nothing more is sent ({detail})"
    )


class ChatClient:
    """One endpoint's client; `complete` is one chat completion, retried as the section says."""

    def __init__(self, config: LLMConfig, sleep=time.sleep) -> None:
        self.config, self.sleep = config, sleep
        key = api_key(config)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=config.base_url.rstrip("/"), headers=headers, timeout=config.timeout_seconds)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """One slot of the endpoint's concurrency limit, held while this client sends its requests one by one.

        A slot per batch, not per request: each request would otherwise cost two calls to the Prefect API,
        and requests in flight still never exceed the limit, since a client sends one at a time.
        """
        from prefect.concurrency.sync import concurrency

        with concurrency(limit_name(self.config), occupy=1):
            yield

    def _post(self, prompt: str) -> httpx.Response:
        if self.config.requests_per_minute:
            from prefect.concurrency.sync import rate_limit

            rate_limit(limit_name(self.config) + "-rpm")
        body = {"model": self.config.model, "messages": [{"role": "user", "content": prompt}]}
        body |= {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        return self.http.post("/chat/completions", json=body)

    def complete(self, prompt: str) -> Reply:
        from prefect.runtime import flow_run

        refused_here = (self.config.base_url, flow_run.id)
        if refused_here in _REFUSED:
            raise _REFUSED[refused_here]
        delay = self.config.retry_delay_seconds
        for attempt in range(self.config.retries + 1):
            try:
                response = self._post(prompt)
            except httpx.TransportError as exc:  # a time-out or a dropped connection: worth another try
                response, problem = None, f"{type(exc).__name__}"
            else:
                if response.status_code < 300:
                    return _reply(self.config, response)
                if response.status_code not in RETRIED:
                    raise _REFUSED.setdefault(refused_here, _refused(self.config, response))
                problem = f"HTTP {response.status_code}"
            if attempt == self.config.retries:
                break
            wait = max(delay, retry_after(response) or 0.0)
            run_logger().warning("%s: %s; retrying in %.1f s", self.config.base_url, problem, wait)
            self.sleep(wait)
            delay *= 2
        raise EmbedforgeError(
            f"corpus.generate.llm: {self.config.base_url} still failing after {self.config.retries} retries ({problem})"
        )


def _reply(config: LLMConfig, response: httpx.Response) -> Reply:
    try:
        body = response.json()
        text = body["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise EmbedforgeError(
            f"corpus.generate.llm: {config.base_url} did not answer as a chat-completions API ({response.text[:120]!r})"
        ) from None
    usage = body.get("usage") or {}
    return Reply(text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))


def ensure_limits(config: LLMConfig) -> None:
    """Create the endpoint's concurrency limit (and per-minute limit) when missing; one an operator set is kept."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    wanted = {limit_name(config): (config.max_in_flight, 0.0)}
    if config.requests_per_minute:
        rpm = config.requests_per_minute
        wanted[limit_name(config) + "-rpm"] = (max(1, int(rpm // 60) or 1), rpm / 60)
    with get_client(sync_client=True) as client:
        for name, (limit, decay) in wanted.items():
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                create = GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay)
                client.create_global_concurrency_limit(create)
                run_logger().info("Concurrency limit %s: %d slots", name, limit)
            else:
                run_logger().info("Concurrency limit %s: %d slots (set on the server)", name, existing.limit)
