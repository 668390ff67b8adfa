"""Nothing private leaves with a release: a full flow with a secret planted in each place a user or an attacker
puts one, then every file the run and the release wrote, Prefect's database and the terminal output searched.

The flow is started the way a deployment's run is (its recipe given as the flow's parameter, not read from a file
by `embedforge validate`, which refuses a literal secret), so the redaction step is what is tested here.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from test_corpus import _llm_recipe, write_docs

from embedforge.recipe import Recipe

from llm_server import LocalLLM

ENV_KEY = "sk-scan-env-key-0123456789abcdef"  # the endpoint's key, in an environment variable
URL_PASSWORD = "scan-url-pass-77889900"  # in the endpoint URL's user part
JOB_TOKEN = "hf_scanJobVariableToken0123456789abcdefgh"  # a literal token under job_variables.env
JOB_VALUE = "scan-plain-job-value-4455"  # any other job-variables env value
SECRETS = {
    "environment": ENV_KEY,
    "URL password": URL_PASSWORD,
    "URL user:password as Basic auth": base64.b64encode(f"scanuser:{URL_PASSWORD}".encode()).decode(),
    "job_variables token": JOB_TOKEN,
    "job_variables value": JOB_VALUE,
}


def _found(data: bytes) -> list[str]:
    return [where for where, secret in SECRETS.items() if secret.encode() in data]


def _files_with_secrets(*folders: Path) -> dict[str, list[str]]:
    hits = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and (found := _found(path.read_bytes())):
                hits[str(path)] = found
    return hits


def _database_files() -> list[Path]:
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url.get_secret_value()
    database = Path(url.split("///", 1)[1])
    return [p for p in database.parent.glob(database.name + "*") if p.is_file()]


def _flush_to_the_database() -> None:
    """What the run sent to the API asynchronously (log records, events) written before the database is read."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)


def _recipe(tiny_model: str, folder: Path, llm: LocalLLM, base_url: str) -> dict:
    recipe = _llm_recipe(tiny_model, write_docs(folder / "docs"), folder, llm)
    recipe["corpus"]["generate"]["llm"] |= {"base_url": base_url, "api_key_env": "EMBEDFORGE_SCAN_API_KEY"}
    recipe["deployment"] = {"job_variables": {"env": {"HF_TOKEN": JOB_TOKEN, "SOME_SETTING": JOB_VALUE}}}
    return recipe


@pytest.mark.slow
def test_no_planted_secret_reaches_a_file_the_database_or_the_terminal(
    prefect_server, tiny_model, tmp_path, monkeypatch, capfd
):
    from embedforge.errors import EmbedforgeError
    from embedforge.flows.finetune import finetune

    monkeypatch.setenv("EMBEDFORGE_SCAN_API_KEY", ENV_KEY)
    monkeypatch.chdir(tmp_path)  # the card names paths relative to the working directory
    with LocalLLM() as llm:
        # A run that publishes: the endpoint URL carries a user and password, the job variables a token.
        with_password = llm.url.replace("http://", f"http://scanuser:{URL_PASSWORD}@")
        published = finetune(recipe=Recipe.model_validate(_recipe(tiny_model, tmp_path, llm, with_password)))
        # A run the endpoint refuses, quoting back the key it was sent in its 401 reply.
        llm.state.key, llm.state.echo_key = "sk-the-right-one-000000", True
        with pytest.raises(EmbedforgeError) as refused:
            finetune(recipe=Recipe.model_validate(_recipe(tiny_model, tmp_path / "second", llm, llm.url)))
    _flush_to_the_database()
    assert published.outcome.decision == "published", published.outcome
    assert "answered HTTP 401" in str(refused.value) and "Authorization: Bearer ***" in str(refused.value)
    assert any(r["auth"] == f"Bearer {ENV_KEY}" for r in llm.state.requests)  # the key was really sent
    output = capfd.readouterr()
    assert not _found((output.out + output.err).encode()), "the terminal shows a secret"
    assert not _files_with_secrets(tmp_path), "a file of a run or a release holds a secret"
    database = {str(p): _found(p.read_bytes()) for p in _database_files()}
    assert not any(database.values()), f"Prefect's database holds a secret: {database}"
    card = (tmp_path / "published" / "latest" / "README.md").read_text()
    assert "http://***@127.0.0.1" in card  # the endpoint is named, without its user part
    assert "job_variables" not in card and "/tmp/" not in card  # nor the worker's settings, nor a local path
