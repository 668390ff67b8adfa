"""The operator's Prefect server as the commands that register with it find it: answering, with its work pools.

Light on purpose: `notify` and `alerts` import this and nothing that trains.
"""

from __future__ import annotations

from pathlib import Path

from embedforge.errors import EmbedforgeError


def api_answers(timeout: float = 10.0) -> bool:
    """Whether the Prefect API answers its health check within `timeout` s: once, without the client's retries.

    A server that takes the connection and never answers would otherwise hold a command for minutes.
    """
    from prefect import get_client
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
        with get_client(httpx_settings={"timeout": timeout}, sync_client=True) as client:
            return client.api_healthcheck() is None


def check_server(pools: dict[str, list[Path]], command: str = "deploy") -> None:
    """Before anything is registered: the API answers and every work pool the recipes name exists on it."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise EmbedforgeError(
            f"{command}: no Prefect server to register with; start one (prefect server start) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    if not api_answers():
        raise EmbedforgeError(f"{command}: the Prefect API at {url} does not answer; is the server running?")
    with get_client(sync_client=True) as client:
        for pool, paths in pools.items():
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                names = ", ".join(str(p) for p in paths)
                raise EmbedforgeError(
                    f"deploy: work pool {pool!r} (named by {names}) does not exist on {url}; nothing was registered. "
                    f"Create it with `prefect work-pool create {pool} --type process`, or pass --pool"
                ) from None
