"""One redaction step for everything that leaves the process: cards, recipe copies, artifacts, logs, state
messages, events, error lines and the history table.

Three kinds of secret are recognised wherever they appear in text: the user part of a URL
(`http://user:password@host`), the value of a query-string key named like a credential (`?api_key=...`) and an
`Authorization`/Bearer value. In structured data (a recipe, an event payload), every value under a key named like a
token, key, secret or password, and every value under `job_variables.env`, is replaced too. Finally the values of
this process's credential environment variables and the keys embedforge itself reads (an LLM endpoint's key) are
replaced wherever they appear, since an endpoint may echo a key in any shape.
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
# A key whose value is a credential: hf_token, api_key, client_secret, password, auth, HF_TOKEN ...
# (but not tokenizer settings, key columns or max_tokens, whose names only contain the words).
SECRET_NAME = re.compile(
    r"(?:^|[_\-.])(?:token|api[_\-]?key|key|secret|password|passwd|pwd|credentials?|auth|auth_string|authorization"
    r"|cookie)$",
    re.IGNORECASE,
)
USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/\s@'\"<>]+)@")
QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:[a-z0-9_\-]*(?:token|key|secret|password|passwd|pwd|sig|signature|auth|code|credential)"
    r"[a-z0-9_\-]*))=(?P<value>[^&#\s'\"<>]+)",
    re.IGNORECASE,
)
# A credential after an auth scheme has a digit or a symbol in it: "Token budget" in prose is no credential.
_BEARER = re.compile(
    r"(?P<scheme>\b(?:[Bb]earer|Basic|Token)\s+)(?P<value>(?=[A-Za-z]*[0-9._~+/=\-])[A-Za-z0-9._~+/=\-]{4,})"
)
_HEADER = re.compile(
    r"(?P<key>\b(?:authorization|x-api-key|api-key|proxy-authorization)[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<value>(?!(?:Bearer|Basic|Token)\s)[^\s,;'\"}]+)",
    re.IGNORECASE,
)
# Shorter values (a flag, a port) are not worth the false matches in every line they would hide.
_MIN_SECRET = 8
_known: set[str] = set()
# The shell's working directories: named like a password ("pwd"), they hold the path every run's files are under.
_NOT_CREDENTIALS = {"PWD", "OLDPWD"}


def remember(secret: str | None) -> None:
    """A credential this process read (a Secret block's value, an endpoint key): hidden wherever it shows up."""
    if secret and len(secret) >= _MIN_SECRET:
        _known.add(secret)


def _secrets() -> list[str]:
    """Credentials this process holds: those remembered and the credential-named environment variables' values."""
    from_env = {
        value
        for name, value in os.environ.items()
        if SECRET_NAME.search(name.lower().replace("__", "_"))
        and len(value) >= _MIN_SECRET
        and name not in _NOT_CREDENTIALS
    }
    return sorted(_known | from_env, key=len, reverse=True)  # the longest first: one may contain another


def redact(text: str) -> str:
    """The text with every credential it shows replaced by ***."""
    if not text:
        return text
    for secret in _secrets():
        text = text.replace(secret, MASK)
    text = USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = QUERY_SECRET.sub(lambda m: f"{m['key']}={MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['scheme']}{MASK}", text)
    return _HEADER.sub(lambda m: f"{m['key']}{MASK}", text)


# Keys that name where a credential is kept, not the credential: the run needs them to find it.
NAMES_A_SECRET = {"api_key_env", "api_key_secret", "path_env", "token_secret"}


def redact_data(data: Any, under_env: bool = False) -> Any:
    """Structured data with its credentials replaced: values under credential-named keys and under an `env`
    mapping (job variables' environment, whatever it holds), and every string as `redact` treats text."""
    if isinstance(data, dict):
        return {key: _redact_value(key, value, under_env or key == "env") for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(value, under_env) for value in data]
    if isinstance(data, str):
        return MASK if under_env and data else redact(data)
    return data


def _redact_value(key: Any, value: Any, under_env: bool) -> Any:
    if is_secret_name(key) and isinstance(value, (str, int, float)) and value != "":
        return MASK
    return redact_data(value, under_env)


def is_secret_name(name: Any) -> bool:
    """A key or variable named like a credential (hf_token, api_key, PASSWORD); not max_tokens or api_key_env."""
    return isinstance(name, str) and name not in NAMES_A_SECRET and bool(SECRET_NAME.search(name))


# An absolute local path of two parts or more, not inside a URL (after a host) or a date.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~\-])(?:/[\w.\-]+){2,}/?")


def local_paths_hidden(text: str) -> str:
    """Text for readers elsewhere: each absolute local path named relative to the working directory (the project
    root, where recipes name their files from), or by its last part when it lies outside it."""
    from pathlib import Path

    root = Path.cwd()

    def shown(match: re.Match) -> str:
        path = Path(match.group(0))
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name

    return _ABSOLUTE_PATH.sub(shown, text)
