"""Prefect's artifact calls, each through the redaction step: what the dashboard shows leaves the process.

Stages import these instead of `prefect.artifacts`' own (tests/test_layout.py checks it), so no artifact is written
that the redaction step did not see. Progress artifacts carry a number only and are Prefect's own.
"""

from __future__ import annotations

from typing import Any

from prefect import artifacts

from embedforge.redact import redact, redact_data


def create_markdown_artifact(markdown: str, key: str | None = None, description: str | None = None, **kwargs: Any):
    return artifacts.create_markdown_artifact(redact(markdown), key=key, description=description, **kwargs)


def create_table_artifact(table: Any, key: str | None = None, description: str | None = None, **kwargs: Any):
    return artifacts.create_table_artifact(redact_data(table), key=key, description=description, **kwargs)


def create_link_artifact(link: str, link_text: str | None = None, key: str | None = None, **kwargs: Any):
    return artifacts.create_link_artifact(redact(link), link_text=link_text, key=key, **kwargs)
