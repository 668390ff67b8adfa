"""The Hugging Face Hub client as push and release use it: the token, retries on outages, and clear errors.

Every Hub call goes through ``call``: the recipe's retry settings (``push.retries``) apply to
connection errors and 5xx answers only, and a failure that outlasts them becomes one token-free line.
"""

from __future__ import annotations

import functools
import os

import httpx
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from prefect.tasks import exponential_backoff

from embedforge.config.push import PushConfig
from embedforge.errors import EmbedforgeError


def token(config: PushConfig) -> str | None:
    if config.token_secret:
        from prefect.blocks.system import Secret

        try:
            return Secret.load(config.token_secret).get()
        except ValueError as exc:
            raise EmbedforgeError(f"push.token_secret: no Prefect Secret block named {config.token_secret!r}") from exc
    return os.environ.get("HF_TOKEN") or None


def _transport_errors() -> tuple[type[Exception], ...]:
    """Connection errors of the HTTP client huggingface_hub uses: httpx, or httpx2 from huggingface_hub 2 on."""
    try:
        import httpx2
    except ImportError:
        return (httpx.TransportError,)
    return (httpx.TransportError, httpx2.TransportError)


TRANSPORT_ERRORS = _transport_errors()


@functools.cache
def with_timeouts() -> None:
    """huggingface_hub's client waits forever by default; a Hub that stops answering must fail, then retry.

    The limits are per network operation (connect, one read, one write), so a large upload is not cut short.
    """
    from huggingface_hub.utils import _http

    def client():
        session = _http.default_client_factory()
        session.timeout = type(session.timeout)(60.0, connect=10.0)
        return session

    _http.set_client_factory(client)


def api(config: PushConfig, hub_token: str | None) -> HfApi:
    with_timeouts()
    return HfApi(endpoint=config.endpoint, token=hub_token)


def _scrub(text: str, hub_token: str | None) -> str:
    return text.replace(hub_token, "***") if hub_token else text


def hub_error(exc: HfHubHTTPError, repo_id: str, hub_token: str | None) -> EmbedforgeError:
    """A clear, token-free message for a Hub call that failed for good."""
    status = exc.response.status_code if exc.response is not None else None
    if status in (401, 403):
        return EmbedforgeError(
            f"push: token lacks write access to {repo_id} (HTTP {status}); check HF_TOKEN or push.token_secret"
        )
    return EmbedforgeError(
        f"push: the Hub refused the request for {repo_id} (HTTP {status}): "
        f"{_scrub(exc.server_message or str(exc), hub_token)}"
    )


def not_found(exc: HfHubHTTPError) -> bool:
    return exc.response is not None and exc.response.status_code == 404


def retry_on_hub_outage(task, task_run, state) -> bool:
    """Prefect retry condition: connection errors and 5xx answers can pass; anything else fails the same again."""
    try:
        state.result()
    except HfHubHTTPError as exc:
        return exc.response is None or exc.response.status_code >= 500
    except TRANSPORT_ERRORS:
        return True
    except Exception:
        return False
    return False


def _with_hub_retries(hub_task, config: PushConfig):
    """The recipe's retry settings, the one place they are read."""
    delay = exponential_backoff(config.retry_delay_seconds) if config.retries else 0
    return hub_task.with_options(
        retries=config.retries, retry_delay_seconds=delay, retry_condition_fn=retry_on_hub_outage
    )


def call(config: PushConfig, hub_task, *args):
    """Run a Hub task with the recipe's retries; a failure that outlasts them becomes one clear line."""
    try:
        return _with_hub_retries(hub_task, config)(config, *args)
    except HfHubHTTPError as exc:
        raise hub_error(exc, config.full_repo_id, token(config)) from None
    except TRANSPORT_ERRORS as exc:
        raise EmbedforgeError(
            f"push: the Hub at {config.endpoint or 'huggingface.co'} cannot be reached "
            f"after {config.retries} retries: {exc}"
        ) from None
