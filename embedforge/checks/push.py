"""Pre-run checks of the push section: the target can be written, the token is there and the Hub answers."""

from __future__ import annotations

import tempfile
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError

from embedforge import hub
from embedforge.config.push import PushConfig
from embedforge.errors import EmbedforgeError


def writable(folder: Path) -> str | None:
    """Why files cannot be written under this folder (created if missing), or None when they can."""
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        return f"cannot write to {existing} ({exc.strerror})"
    return None


def _check_local(root: Path) -> list[tuple[str, str]]:
    latest = root / "latest"
    if latest.exists() and not latest.is_symlink():
        # The link to the newest release is replaced at publish time; a real folder there cannot be.
        return [("push.local_dir", f"{latest} is a real folder, not the link to the newest release; move it away")]
    problem = writable(root)
    return [("push.local_dir", problem)] if problem else []


def check_target(config: PushConfig) -> list[tuple[str, str]]:
    """(field, problem) for a target this run could not publish to: checked before any training."""
    if not config.active:
        return []
    if config.local_dir:
        return _check_local(Path(config.local_dir))
    try:
        token = hub.token(config)
    except EmbedforgeError as exc:
        return [("push.token_secret", str(exc).removeprefix("push.token_secret: "))]
    if not token:
        return [("push.repo_id", "publishing to the Hub needs a token: set HF_TOKEN or push.token_secret")]
    if hub_constants.HF_HUB_OFFLINE:
        offline = (
            "HF_HUB_OFFLINE is set, so nothing can be published to the Hub; unset it, or publish to push.local_dir"
        )
        return [("push.repo_id", offline)]
    try:
        hub.api(config, token).whoami()
    except HfHubHTTPError as exc:
        return [("push.repo_id", hub.hub_error(exc, config.full_repo_id, token).args[0].removeprefix("push: "))]
    except hub.TRANSPORT_ERRORS as exc:
        return [("push.endpoint", f"the Hub at {config.endpoint or hub_constants.ENDPOINT} cannot be reached ({exc})")]
    return []
