"""The release decision and what it reads as, without a server: the verdict, the dashboard texts, the meta file."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from embedforge.config.push import PushConfig
from embedforge.decisions import ReleaseDecision
from embedforge.flows.run import push_outcome
from embedforge.reports import gain_table
from embedforge.tasks.decide import decide, decision_markdown
from embedforge.tasks.outcome import history_row, release_markdown
from embedforge.tasks.push import release_meta
from embedforge.types import Metrics, RunRecord, TrainedModel

RECORD = RunRecord(
    recipe="tiny",
    recipe_yaml="name: tiny\n",
    recipe_hash="r" * 16,
    model_hash="m" * 16,
    base_model_id="base@sha256:abc",
    run_id="20261202-040000-abcdef12",
    run_dir="/runs/tiny/20261202-040000-abcdef12",
    data=[],
)
METRICS = Metrics(
    headline="cosine_ndcg@10",
    base={"cosine_ndcg@10": 0.5, "cosine_mrr@10": 0.4},
    finetuned={"cosine_ndcg@10": 0.6, "cosine_mrr@10": 0.55},
    evaluators=[],
    test_key="t" * 16,
)


def _decision(decided: str, champion: float | None = 0.55, reason: str = "why") -> ReleaseDecision:
    return ReleaseDecision(
        decision=decided,
        reason=reason,
        release=RECORD.release,
        headline=METRICS.headline,
        challenger=0.6,
        champion=champion,
        target="/published",
    )


def test_decide_publishes_the_first_release_and_only_better_ones():
    config = PushConfig(local_dir="x")
    assert decide(config, "ndcg", 0.5, None) == (True, "first release")
    assert decide(config, "ndcg", 0.6, 0.5) == (True, "ndcg 0.6000 > published 0.5000")
    # A tie (a forced retrain of the same inputs) would only add another copy of the same model.
    assert decide(config, "ndcg", 0.5, 0.5) == (
        False,
        "ndcg 0.5000 equals the published model's: kept the published model",
    )
    assert decide(config, "ndcg", 0.4, 0.5) == (False, "ndcg 0.4000 < published 0.5000: kept the published model")
    forced = PushConfig(local_dir="x", require_improvement=False)
    assert decide(forced, "ndcg", 0.4, 0.5) == (True, "require_improvement is off (ndcg: 0.4000 vs published 0.5000)")


@pytest.mark.parametrize(
    ("decided", "champion", "state", "title"),
    [
        ("published", 0.55, "Published", "## Decided to publish: tiny-20261202-040000-abcdef12"),
        ("published", None, "Published", "## Decided to publish: tiny-20261202-040000-abcdef12"),
        ("champion kept", 0.7, "Champion kept", "## Not published: tiny-20261202-040000-abcdef12"),
        ("already published", 0.6, "Already published", "## Already published: tiny-20261202-040000-abcdef12"),
        ("trained", None, "Trained", "## Not published: tiny-20261202-040000-abcdef12"),
        ("rejected", 0.55, "Rejected", "## Rejected: tiny-20261202-040000-abcdef12"),
    ],
)
def test_each_decision_reads_as_its_own_state_and_artifact(decided, champion, state, title):
    """One word from decide to the final state: the outcome, the history row and the state say what decide said."""
    decision = _decision(decided, champion)
    outcome = push_outcome(RECORD, METRICS, decision)
    assert (outcome.decision, outcome.state_name) == (decided, state)
    shown = decision_markdown(decision)
    assert shown.startswith(title + "\n")
    assert (
        "| this run | 0.6000 |" in shown
        and f"| published | {'none' if champion is None else f'{champion:.4f}'} |" in shown
    )


def test_only_a_publish_or_an_earlier_publish_counts_as_out():
    decided = ("published", "already published", "champion kept", "trained", "rejected")
    assert [(d, _decision(d).pushed) for d in decided] == [
        ("published", True),
        ("already published", True),
        ("champion kept", False),
        ("trained", False),
        ("rejected", False),
    ]


def test_the_release_says_how_it_was_made():
    model = TrainedModel(model_dir="/m", run_dir="/r", base_model="pkg:x/model", card_data="/r/card.pkl")
    meta = release_meta(RECORD, model, METRICS)
    assert meta["headline"] == "cosine_ndcg@10" and meta["metrics"] == METRICS.finetuned
    assert (meta["recipe"], meta["run_id"], meta["base_model"]) == ("tiny", RECORD.run_id, "pkg:x/model")
    assert (meta["model_hash"], meta["base_model_id"], meta["test_key"]) == ("m" * 16, "base@sha256:abc", "t" * 16)


def test_history_and_live_release_rows_carry_the_figures_decided_on():
    outcome = push_outcome(RECORD, METRICS, _decision("published").model_copy(update={"location": "/published/x"}))
    when = datetime(2026, 12, 2, 4, 0, tzinfo=timezone.utc)
    row = history_row(outcome, when)
    assert (row["decision"], row["base"], row["fine-tuned"], row["champion"]) == (
        "published",
        "0.5000",
        "0.6000",
        "0.5500",
    )
    assert row["date"] == "2026-12-02 04:00 UTC" and row["run"] == RECORD.run_id
    live = release_markdown(outcome, when)
    assert "Live release of tiny: tiny-20261202-040000-abcdef12" in live and "| 0.6000 | /published/x |" in live


def test_gain_table_has_base_finetuned_and_delta_per_metric():
    assert gain_table(METRICS) == [
        {"metric": "cosine_ndcg@10", "base": 0.5, "fine-tuned": 0.6, "delta": 0.1, "delta 95 % CI": ""},
        {"metric": "cosine_mrr@10", "base": 0.4, "fine-tuned": 0.55, "delta": 0.15, "delta 95 % CI": ""},
    ]


def test_an_approver_settles_the_decision_in_the_same_words():
    from embedforge.decisions import Approval
    from embedforge.tasks.approve import approval_section, approved

    decision = _decision("published", reason="ndcg 0.6000 > published 0.5500")
    yes = Approval(approved=True, by="Ana", reason="checked", at="2026-12-06T10:00:00+00:00")
    no = Approval(approved=False, by="Bo", reason="freeze", at="2026-12-06T10:00:00+00:00")
    late = Approval(approved=False, by="timeout", reason="no answer within 60 s", at="2026-12-06T10:00:00+00:00")
    assert (approved(decision, yes).decision, approved(decision, yes).reason) == (
        "published",
        "ndcg 0.6000 > published 0.5500; approved by Ana: checked",
    )
    assert push_outcome(RECORD, METRICS, approved(decision, no)).state_name == "Rejected"
    assert approved(decision, no).reason == "not approved by Bo: freeze" and not approved(decision, no).pushed
    assert approved(decision, late).reason == "not approved in time: no answer within 60 s"
    assert approval_section(yes) == "\n## Approval\n\n**Approved** by Ana on 2026-12-06T10:00:00+00:00: checked\n"
    assert "nobody answered in time" in approval_section(late)


def test_a_run_on_the_temporary_server_refuses_to_wait_for_an_approval_nobody_can_give():
    from embedforge.cli.run import _check_approver
    from embedforge.errors import EmbedforgeError

    recipe = SimpleNamespace(push=PushConfig(local_dir="x", approval="required"))
    with pytest.raises(EmbedforgeError, match=r"r.yaml: push.approval: required waits for a person .* PREFECT_API_URL"):
        _check_approver(recipe, "r.yaml", api=object())
    _check_approver(recipe, "r.yaml", api=None)  # an operator's server: its dashboard has the form
