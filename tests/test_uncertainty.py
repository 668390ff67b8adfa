"""Figures with their doubt: per-query figures, bootstrap intervals, and the gate and decision that read them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedforge.cli.run import _doubt
from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.push import PushConfig
from embedforge.evaluators import build_evaluators, per_query_of, run_evaluators
from embedforge.figures import Interval
from embedforge.flows.run import RunResult
from embedforge.models import load_model
from embedforge.reports import doubt_markdown
from embedforge.tasks.decide import decide
from embedforge.tasks.evaluate import with_intervals
from embedforge.tasks.gate import gate_failures
from embedforge.types import EvalSplit, Metrics, RunRecord, Splits
from embedforge.uncertainty import TOO_WIDE, interval, paired, too_small

from conftest import make_pairs


def _metrics(base: list[float], finetuned: list[float]) -> Metrics:
    key = "docs_cosine_ndcg@10"
    metrics = Metrics(
        headline=key, base={key: np.mean(base)}, finetuned={key: np.mean(finetuned)}, evaluators=[], test_key="t"
    )
    return with_intervals(metrics, base, finetuned)


def test_a_known_share_gets_the_textbook_interval():
    # 400 queries, half found: the normal approximation gives 0.5 ± 1.96 * sqrt(0.25 / 400) = 0.5 ± 0.049.
    found = interval([1.0, 0.0] * 200)
    assert found.n == 400
    assert found.low == pytest.approx(0.451, abs=0.01) and found.high == pytest.approx(0.549, abs=0.01)
    assert interval([0.7]) is None and interval([0.5, 0.5]) == Interval(low=0.5, high=0.5, n=2)


def test_the_same_figures_always_get_the_same_interval():
    values = list(np.random.default_rng(3).random(50))
    assert interval(values) == interval(values)


def test_a_paired_gain_is_narrower_than_either_figure():
    rng = np.random.default_rng(0)
    base = list(rng.random(200))
    tuned = [min(1.0, b + 0.03 + rng.normal(0, 0.02)) for b in base]
    gain = paired(base, tuned)
    assert 0 < gain.low < 0.03 < gain.high
    assert gain.half_width < interval(tuned).half_width / 5
    assert paired(base, tuned[:-1]) is None  # not the same queries: nothing to pair


def test_per_query_figures_average_to_the_library_figures(tiny_model, tmp_path):
    pairs = make_pairs(30)
    frame = pd.DataFrame({"anchor": [p["question"] for p in pairs], "positive": [p["context"] for p in pairs]})
    frame.to_parquet(tmp_path / "test.parquet")
    evaluation = {"docs": EvalSplit(kind="retrieval", test=str(tmp_path / "test.parquet"))}
    splits = Splits(
        train=str(tmp_path / "test.parquet"), train_name="docs", train_kind="retrieval", evaluation=evaluation
    )
    model = load_model(tiny_model)
    for config in (EvaluateConfig(), EvaluateConfig(matryoshka_dims=[32, 16])):
        evaluators = build_evaluators(splits, "test", config)
        figures, _ = run_evaluators(model, evaluators)
        per_query = per_query_of(evaluators)
        assert set(per_query) == set(figures)
        for key, values in per_query.items():
            assert len(values) == 30 and np.mean(values) == pytest.approx(figures[key], abs=1e-9), key


def test_the_gain_gate_reads_the_lower_bound():
    base = [0.5, 0.6, 0.4, 0.7] * 25
    within = _metrics(base, [b + d for b, d in zip(base, [0.05, -0.04, 0.03, -0.03] * 25)])
    beyond = _metrics(base, [b + d for b, d in zip(base, [0.05, 0.01, 0.03, 0.02] * 25)])
    gate = EvaluateConfig(gates={"gain_lower_bound": 0.0})
    (failure,) = gate_failures(gate, within)
    assert (
        failure.startswith("the gain's 95 % interval (95 % CI [-0.")
        and "100 queries): its lower bound = -0." in failure
    )
    assert gate_failures(gate, beyond) == []
    assert gate_failures(EvaluateConfig(gates={"gain": 0.0}), within) == []  # the plain gain gate sees +0.0025
    (unmeasured,) = gate_failures(gate, within.model_copy(update={"intervals": {}}))
    assert "has no interval (intervals are drawn for retrieval metrics" in unmeasured


def test_decide_keeps_the_champion_when_the_challenger_is_better_only_within_noise():
    config, key = PushConfig(local_dir="/tmp/x"), "ndcg@10"
    noise = Interval(low=-0.004, high=0.007, n=100)
    publish, reason = decide(config, key, 0.7014, 0.7000, noise)
    assert (
        not publish and "within the noise: the difference's 95 % CI [-0.0040, +0.0070] over 100 test queries" in reason
    )
    publish, reason = decide(config, key, 0.7300, 0.7000, Interval(low=0.01, high=0.05, n=900))
    assert publish and reason == "ndcg@10 0.7300 > published 0.7000 (95 % CI [+0.0100, +0.0500] over 900 test queries)"
    assert decide(config, key, 0.7014, 0.7000) == (True, "ndcg@10 0.7014 > published 0.7000")  # no per-query figures


def test_a_small_test_split_is_warned_about_in_the_summary_and_the_card(capsys):
    rng = np.random.default_rng(1)
    base = list(rng.random(25))
    small = _metrics(base, [float(np.clip(b + rng.normal(0.02, 0.15), 0, 1)) for b in base])
    assert small.intervals["gain"].half_width > TOO_WIDE
    _doubt(RunResult.trained(Path("run"), "model", small, _record()))
    out = capsys.readouterr().out
    assert "gain +0.0" in out and "over 25 test queries" in out
    assert "Warning: the test split is too small to tell: over 25 queries the gain's 95 % interval" in out
    assert "**Warning:** the test split is too small" in doubt_markdown(small)
    # Three queries that rank alike give an interval of width 0; three queries still tell nothing.
    three = _metrics([1.0, 0.5, 1.0], [1.0, 0.5, 1.0])
    assert too_small(three.intervals).startswith("the test split is too small to tell: 3 queries are too few")
    # A gain far beyond a wide interval is told apart; the warning says so and what it cannot tell.
    rng = np.random.default_rng(2)
    clear = _metrics(list(rng.random(60) * 0.3), list(rng.random(60) * 0.3 + 0.5))
    assert clear.intervals["gain"].half_width > TOO_WIDE and clear.intervals["gain"].low > 0
    assert too_small(clear.intervals).startswith("the test split is small: over 60 queries")
    assert "This gain lies beyond it" in too_small(clear.intervals)
    large = _metrics([0.5] * 2000, [0.52] * 1000 + [0.53] * 1000)
    assert "Warning" not in doubt_markdown(large) and "gain 95 % CI [+0.02" in doubt_markdown(large)


def _record() -> RunRecord:
    return RunRecord(
        recipe="r", recipe_yaml="", recipe_hash="h", model_hash="m", base_model_id="b", run_id="1", run_dir="d", data=[]
    )
