"""The redaction step alone: what a person reading a card, a log line or an event would otherwise see."""

from __future__ import annotations

import logging

import pytest

from embedforge.redact import local_paths_hidden, redact, redact_data, remember
from embedforge.secrets import literal_secrets


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:pa55word@host:8000/v1", "http://***@host:8000/v1"),
        ("https://host/v1/models?api_key=abc123&page=2", "https://host/v1/models?api_key=***&page=2"),
        ("got Authorization: Bearer sk-live-abcdef", "got Authorization: Bearer ***"),
        ('{"authorization": "tok-12345678"}', '{"authorization": "***"}'),
        ("Basic YWxpY2U6cGE1NXdvcmQ=", "Basic ***"),
        ("max_tokens=256 and the token budget", "max_tokens=256 and the token budget"),
    ],
)
def test_credentials_in_text_are_hidden_and_nothing_else(text, shown):
    assert redact(text) == shown


def test_a_remembered_key_and_a_credential_variable_are_hidden_wherever_they_show(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", "k-from-the-environment-42")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false-but-long-enough")  # named like a token, not one
    monkeypatch.setenv("PWD", "/home/ana/project")  # the shell's working directory, named like a password
    remember("a-block-secret-value-7")
    text = "echoed k-from-the-environment-42 and a-block-secret-value-7; false-but-long-enough in /home/ana/project"
    assert redact(text) == "echoed *** and ***; false-but-long-enough in /home/ana/project"


def test_structured_data_hides_credential_keys_and_every_job_environment_value():
    recipe = {
        "train": {"args": {"hub_token": "hf_abc", "max_tokens": 3}},
        "corpus": {"generate": {"llm": {"api_key_env": "OPENAI_API_KEY", "base_url": "http://u:p@h/v1"}}},
        "deployment": {"job_variables": {"env": {"HF_HOME": "/cache", "HF_TOKEN": "hf_x"}, "image": "worker:1"}},
    }
    assert redact_data(recipe) == {
        "train": {"args": {"hub_token": "***", "max_tokens": 3}},
        "corpus": {"generate": {"llm": {"api_key_env": "OPENAI_API_KEY", "base_url": "http://***@h/v1"}}},
        "deployment": {"job_variables": {"env": {"HF_HOME": "***", "HF_TOKEN": "***"}, "image": "worker:1"}},
    }


def test_log_records_leave_redacted(caplog):
    from embedforge.logs import redact_logs

    previous = logging.getLogRecordFactory()
    redact_logs()
    try:
        logging.getLogger("embedforge").warning("endpoint %s refused", "http://bob:hunter22@h/v1")
    finally:
        logging.setLogRecordFactory(previous)
    assert caplog.records[-1].getMessage() == "endpoint http://***@h/v1 refused"


def test_the_card_names_local_paths_relative_to_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = f"made from `{tmp_path}/docs/rules` and /srv/shared/corpus at http://h:8/v1/chat on 2026/12/06"
    assert local_paths_hidden(text) == "made from `docs/rules` and corpus at http://h:8/v1/chat on 2026/12/06"


def test_a_literal_secret_is_found_and_a_reference_or_a_redacted_copy_is_not():
    found = literal_secrets(
        {
            "deployment": {"job_variables": {"env": {"HF_TOKEN": "hf_" + "a" * 34, "MODE": "fast"}}},
            "push": {"endpoint": "https://user:pw@hub.internal"},
        }
    )
    assert [field for field, _ in found] == ["deployment.job_variables.env.HF_TOKEN", "push.endpoint"]
    assert not literal_secrets(
        {
            "deployment": {"job_variables": {"env": {"HF_TOKEN": "{{ prefect.blocks.secret.hf-token }}"}}},
            "corpus": {"generate": {"llm": {"base_url": "http://***@h/v1", "api_key_env": "OPENAI_API_KEY"}}},
            "push": {"token_secret": "hf-token"},
        }
    )
