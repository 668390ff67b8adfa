"""An OpenAI-compatible chat-completions client, as vLLM, Ollama, llama.cpp's server, TGI and hosted APIs speak it.

The requests in flight hold slots of the endpoint's Prefect concurrency limit (and its rate limit, when set),
so the runs of several models share one endpoint's capacity. 429, 5xx and time-outs are retried with
back-off, waiting at least what Retry-After says; 400, 401, 403 and 404 stop at once, in one line that
names the endpoint and the status. The key is never logged or written.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlparse

import aiohttp
from aiohttp import BasicAuth
from yarl import URL

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


@dataclass
class Answer:
    """What the endpoint answered to one request."""

    status: int
    headers: Mapping[str, str]
    text: str


def retry_after(answer: Answer | None) -> float | None:
    """Seconds the server asks to wait: Retry-After as seconds or as an HTTP date."""
    value = answer.headers.get("retry-after") if answer is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)


class ChatClient:
    """One endpoint's asynchronous client; `complete` is one chat completion, retried as the section says.

    The requests of a batch share one connection pool and are in flight at once, on slots its stage holds.
    aiohttp, not httpx: it spends a third of the CPU per request, which decides how many requests a second
    one process can send (bench/generation.py).
    """

    def __init__(self, config: LLMConfig, sleep=asyncio.sleep) -> None:
        from prefect.runtime import flow_run

        self.config, self.sleep = config, sleep
        key = api_key(config)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        # A user and password in base_url (a gateway's basic auth) authorise when no key is set; aiohttp refuses
        # a URL's credentials beside an Authorization header, so they never travel in the URL itself.
        url = URL(config.base_url.rstrip("/") + "/chat/completions")
        self.url = url.with_user(None)
        self.basic = BasicAuth(url.user, url.password or "") if url.user and not key else None
        self.refused_here = (config.base_url, flow_run.id)
        self.http: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def session(self, in_flight: int) -> AsyncIterator[None]:
        """A connection pool for `in_flight` requests at once, open for the block."""
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_seconds)
        pool = aiohttp.TCPConnector(limit=in_flight)
        session = aiohttp.ClientSession(headers=self.headers, auth=self.basic, timeout=timeout, connector=pool)
        async with session as http:
            self.http = http
            yield

    async def _post(self, prompt: str) -> Answer:
        if self.config.requests_per_minute:
            from prefect.concurrency.asyncio import rate_limit

            await rate_limit(limit_name(self.config) + "-rpm")
        body = {"model": self.config.model, "messages": [{"role": "user", "content": prompt}]}
        body |= {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        async with self.http.post(self.url, json=body) as response:
            return Answer(response.status, response.headers, await response.text())

    async def complete(self, prompt: str) -> Reply:
        if self.refused_here in _REFUSED:
            raise _REFUSED[self.refused_here]
        delay = self.config.retry_delay_seconds
        for attempt in range(self.config.retries + 1):
            try:
                answer = await self._post(prompt)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # a time-out or a dropped connection
                answer, problem = None, f"{type(exc).__name__}"
            else:
                if answer.status < 300:
                    return _reply(self.config, answer)
                if answer.status not in RETRIED:
                    raise _REFUSED.setdefault(self.refused_here, self._refused(answer))
                problem = f"HTTP {answer.status}"
            if attempt == self.config.retries:
                break
            wait = max(delay, retry_after(answer) or 0.0)
            run_logger().warning("%s: %s; retrying in %.1f s", self.config.base_url, problem, wait)
            await self.sleep(wait)
            delay *= 2
        raise EmbedforgeError(
            f"corpus.generate.llm: {self.config.base_url} still failing after {self.config.retries} retries ({problem})"
        )

    def _refused(self, answer: Answer) -> EmbedforgeError:
        detail = answer.text[:200].replace("\n", " ")
        if answer.status in (401, 403) and not self.headers:
            detail = f"no key was sent: {unset_key(self.config)}"
        return EmbedforgeError(
            f"corpus.generate.llm: {self.config.base_url} answered HTTP {answer.status} for model "
            f"{self.config.model!r}; nothing more is sent ({detail})"
        )


def _reply(config: LLMConfig, answer: Answer) -> Reply:
    try:
        body = json.loads(answer.text)
        text = body["choices"][0]["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise EmbedforgeError(
            f"corpus.generate.llm: {config.base_url} did not answer as a chat-completions API ({answer.text[:120]!r})"
        ) from None
    usage = body.get("usage") or {}
    return Reply(text, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))


@contextmanager
def endpoint_slots(config: LLMConfig | None, occupy: int) -> Iterator[int]:
    """`occupy` slots of the endpoint's concurrency limit, taken at once and held for the block; none without one."""
    if config is None:
        yield 0
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(limit_name(config), occupy=occupy):
        yield occupy


def ensure_limits(config: LLMConfig) -> int:
    """Create the endpoint's concurrency limit (and per-minute limit) when missing; one an operator set is kept.

    Returns the slots the endpoint has: the run shares those among its batches."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    wanted = {limit_name(config): (config.max_in_flight, 0.0)}
    if config.requests_per_minute:
        rpm = config.requests_per_minute
        wanted[limit_name(config) + "-rpm"] = (max(1, int(rpm // 60) or 1), rpm / 60)
    slots = {}
    with get_client(sync_client=True) as client:
        for name, (limit, decay) in wanted.items():
            try:
                slots[name] = client.read_global_concurrency_limit_by_name(name).limit
            except ObjectNotFound:
                create = GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=decay)
                client.create_global_concurrency_limit(create)
                slots[name] = limit
                run_logger().info("Concurrency limit %s: %d slots", name, limit)
            else:
                run_logger().info("Concurrency limit %s: %d slots (set on the server)", name, slots[name])
    return slots[limit_name(config)]
