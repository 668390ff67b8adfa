"""A recipe holds no credential: it is copied beside every run, into the card and into Prefect's database.

Checked on the recipe file as written, before anything else reads it: a password in a URL, a credential in a
query string, a value under a key named like a token, key, secret or password, or a value shaped like a known
token. Each is refused naming the field and the safer way to give it.
"""

from __future__ import annotations

import re
from typing import Any

from embedforge.redact import MASK, QUERY_SECRET, USERINFO, is_secret_name

# Hugging Face, OpenAI-style and GitHub tokens, whatever key they sit under.
_TOKEN_SHAPE = re.compile(r"\b(?:hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_\-]{20,}|gh[pousr]_[A-Za-z0-9]{30,})\b")
# A Prefect template names a Secret block or a variable; the worker fills it in, the recipe holds no value.
_TEMPLATE = re.compile(r"^\s*\{\{.*\}\}\s*$")

SAFER = {
    "url": "keep the key out of the URL: corpus.generate.llm.api_key_env names an environment variable that holds "
    "it, or api_key_secret a Prefect Secret block",
    "env": "give it as a Prefect Secret block reference, {{ prefect.blocks.secret.<block-name> }}, or set the "
    "variable on the worker",
    "value": "set it in an environment variable on the worker (HF_TOKEN for the Hub), or in a Prefect Secret block",
}


def _problem(path: str, key: Any, value: str) -> str | None:
    if not value or MASK in value or _TEMPLATE.match(value):
        return None  # a redacted copy (a run's recipe.yaml, resumed) or a reference the worker fills in
    # The patterns the redaction step hides: a recipe that holds what it would hide is refused instead.
    if (match := USERINFO.match(value)) and ":" in match["userinfo"]:
        return f"holds a password in the URL ({match['userinfo'].split(':')[0]}:...@); {SAFER['url']}"
    if QUERY_SECRET.search(value) and "://" in value:
        return f"holds a credential in the URL's query string; {SAFER['url']}"
    under_env = ".env." in f"{path}." or path.endswith(".env")
    if is_secret_name(key) or _TOKEN_SHAPE.search(value):
        return "a literal secret in the recipe, which is copied beside every run and into the card; " + (
            SAFER["env"] if under_env else SAFER["value"]
        )
    return None


def literal_secrets(data: Any, path: str = "") -> list[tuple[str, str]]:
    """(field, problem) for every credential written into the recipe's data."""
    if isinstance(data, dict):
        return [found for key, value in data.items() for found in _at(f"{path}.{key}".lstrip("."), key, value)]
    if isinstance(data, list):
        return [found for i, value in enumerate(data) for found in _at(f"{path}[{i}]", None, value)]
    return []


def _at(path: str, key: Any, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, (dict, list)):
        return literal_secrets(value, path)
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        problem = _problem(path, key, str(value))
        return [(path, problem)] if problem else []
    return []
