"""Evaluation: the seeds' evaluators, Matryoshka encoded once, and the quality gate."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from embedforge.config.evaluate import EvaluateConfig
from embedforge.errors import EmbedforgeError
from embedforge.evaluators import (
    build_evaluators,
    card_evaluators,
    resolve_metric,
    run_evaluators,
)
from embedforge.flows.finetune import finetune
from embedforge.matryoshka import MatryoshkaRetrievalEvaluator
from embedforge.models import load_model
from embedforge.recipe import Recipe
from embedforge.reports import gain_table
from embedforge.tasks.gate import check_quality_gate, gate_failures
from embedforge.types import EvalSplit, Metrics, Splits

from conftest import general_pairs, make_pairs, run_cli, write_jsonl


def _splits(tmp_path: Path, pairs: list[dict]) -> Splits:
    folder = tmp_path / "splits" / "docs"
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"anchor": [p["question"] for p in pairs], "positive": [p["context"] for p in pairs]})
    frame.to_parquet(folder / "test.parquet")
    frame.iloc[:5].to_parquet(tmp_path / "splits" / "train.parquet")
    train = str(tmp_path / "splits" / "train.parquet")
    evaluation = {"docs": EvalSplit(kind="retrieval", test=str(folder / "test.parquet"))}
    return Splits(train=train, train_name="docs", train_kind="retrieval", evaluation=evaluation)


def test_matryoshka_metrics_per_dim_from_one_encoding(tiny_model, tmp_path):
    pairs = make_pairs(40)
    splits = _splits(tmp_path, pairs)
    model = load_model(tiny_model)
    encoded: list[int] = []
    original = model.encode

    def counting_encode(*args, **kwargs):
        texts = args[0] if args else kwargs.get("inputs", kwargs.get("sentences"))
        encoded.append(len(texts))
        return original(*args, **kwargs)

    model.encode = counting_encode
    evaluators = build_evaluators(splits, "test", EvaluateConfig(matryoshka_dims=[32, 16, 8]))
    assert isinstance(evaluators[0], MatryoshkaRetrievalEvaluator)
    metrics, leaves = run_evaluators(model, evaluators)
    assert sum(encoded) == 40 + 40  # each query and each passage once, not once per dim
    assert [leaf.name for leaf in leaves] == ["docs_dim_32", "docs_dim_16", "docs_dim_8"]
    assert {
        "docs_dim_8_cosine_ndcg@10",
        "docs_dim_16_cosine_mrr@10",
        "docs_dim_32_cosine_map@100",
        "docs_dim_32_cosine_recall@5",
    } <= set(metrics)

    # Truncating the one encoding gives what a separate encode at that dim gives.
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    single = evaluators[0].evaluators[2]
    direct = InformationRetrievalEvaluator(
        single.queries and dict(zip(single.queries_ids, single.queries)),
        dict(zip(single.corpus_ids, single.corpus)),
        single.relevant_docs,
        name="docs_dim_8",
        truncate_dim=8,
    )(model)
    assert direct["docs_dim_8_cosine_ndcg@10"] == pytest.approx(metrics["docs_dim_8_cosine_ndcg@10"], abs=1e-6)


def test_distractors_join_the_corpus(tiny_model, tmp_path):
    splits = _splits(tmp_path, make_pairs(20))
    plain = build_evaluators(splits, "test", EvaluateConfig())[0]
    with_distractors = build_evaluators(splits, "test", EvaluateConfig(distractors=True))[0]
    assert len(plain.corpus) == 20
    assert len(with_distractors.corpus) == 20  # the train passages here repeat test passages: deduplicated
    pd.DataFrame(
        {"anchor": ["x"] * 3, "positive": ["other passage 1", "other passage 2", "other passage 3"]}
    ).to_parquet(splits.train)
    assert len(build_evaluators(splits, "test", EvaluateConfig(distractors=True))[0].corpus) == 23


def test_metric_names_resolve_with_or_without_prefix():
    metrics = {"docs_cosine_ndcg@10": 0.5, "docs_cosine_mrr@10": 0.4}
    assert resolve_metric("cosine_ndcg@10", metrics) == "docs_cosine_ndcg@10"
    with pytest.raises(EmbedforgeError, match="metric 'ndcg' is not unique or unknown"):
        resolve_metric("ndcg", metrics)


def test_card_names_the_library_evaluator_per_dim(tmp_path):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    evaluators = card_evaluators(_splits(tmp_path, make_pairs(10)), EvaluateConfig(matryoshka_dims=[32, 8]))
    assert [(type(e), e.name, e.truncate_dim) for e in evaluators] == [
        (InformationRetrievalEvaluator, "docs_dim_32", 32),
        (InformationRetrievalEvaluator, "docs_dim_8", 8),
    ]


def _metrics(base: float, tuned: float) -> Metrics:
    return Metrics(
        headline="docs_cosine_ndcg@10",
        base={"docs_cosine_ndcg@10": base, "docs_cosine_mrr@10": 0.3},
        finetuned={"docs_cosine_ndcg@10": tuned, "docs_cosine_mrr@10": 0.35},
        evaluators=[],
    )


def test_gain_table_rows_are_base_finetuned_and_delta():
    assert gain_table(_metrics(0.5, 0.61234)) == [
        {"metric": "docs_cosine_ndcg@10", "base": 0.5, "fine-tuned": 0.6123, "delta": 0.1123, "delta 95 % CI": ""},
        {"metric": "docs_cosine_mrr@10", "base": 0.3, "fine-tuned": 0.35, "delta": 0.05, "delta 95 % CI": ""},
    ]


def test_gate_on_gain_and_on_a_metric_by_its_short_name():
    passed = check_quality_gate.fn(
        EvaluateConfig(gates={"gain": 0.0, "cosine_mrr@10": 0.35}), _metrics(0.5, 0.6), "m", None
    )
    assert passed is None
    reason = check_quality_gate.fn(
        EvaluateConfig(gates={"gain": 0.2, "cosine_mrr@10": 0.4}), _metrics(0.5, 0.6), "m", None
    )
    assert reason == (
        "quality gate failed: gain in docs_cosine_ndcg@10 = 0.1000 < 0.2 (short by 0.1000); "
        "cosine_mrr@10 = 0.3500 < 0.4 (short by 0.0500). The model is kept at m"
    )


def test_a_nan_metric_never_passes_a_gate():
    assert gate_failures(EvaluateConfig(gates={"gain": 0.0}), _metrics(0.5, float("nan")))


def test_gates_read_the_domain_and_the_general_drop_reads_the_general_sets(tmp_path):
    metrics = _metrics(0.5, 0.6)
    metrics.base["faq_cosine_mrr@10"], metrics.finetuned["faq_cosine_mrr@10"] = 0.7, 0.66
    metrics.general = {"faq": ["faq_cosine_mrr@10"]}
    general = [{"name": "faq", "path": "faq.jsonl"}]
    # "cosine_mrr@10" names the domain's figure (0.35), not the general set's of the same name.
    config = EvaluateConfig(gates={"cosine_mrr@10": 0.35}, general=general, max_general_drop=0.05)
    assert gate_failures(config, metrics) == []
    assert gate_failures(config.model_copy(update={"max_general_drop": 0.02}), metrics) == [
        "general set faq: faq_cosine_mrr@10 fell 0.0400 (0.7000 -> 0.6600), more than evaluate.max_general_drop 0.02"
    ]


@pytest.mark.usefixtures("prefect_server")
def test_general_sets_are_measured_for_both_models_and_a_drop_refuses_the_release(recipe_dict, tmp_path):
    other = general_pairs()
    path = write_jsonl(tmp_path / "general" / "faq.jsonl", other)
    columns = {"anchor": "question", "positive": "context"}
    recipe_dict["evaluate"] = {"general": [{"name": "faq", "path": str(path), "columns": columns}]}
    run = finetune(recipe=Recipe.model_validate(recipe_dict), output_dir=str(tmp_path / "runs"))
    metrics = Metrics.model_validate_json((Path(run.run_dir) / "metrics.json").read_text())
    key = "faq_cosine_ndcg@10"
    assert metrics.general["faq"][0] == key and metrics.headline == "tiny_validation_cosine_ndcg@10"
    base, tuned = metrics.base[key], metrics.finetuned[key]
    assert {"metric": key, "base": round(base, 4), "fine-tuned": round(tuned, 4)}.items() <= next(
        row for row in gain_table(metrics) if row["metric"] == key
    ).items()
    card = (Path(run.model_dir) / "README.md").read_text()
    assert "### General Ability" in card and f"| faq | {key} | {base:.4f} | {tuned:.4f} |" in card
    meta = json.loads((tmp_path / "published" / "latest" / "training_meta.json").read_text())
    assert meta["general"] == {"faq": {"metric": key, "base": base, "fine-tuned": tuned}}

    # A learning rate far too high: the domain is learnt at the cost of what the base model could do.
    recipe_dict["train"]["args"]["learning_rate"] = 0.05
    recipe_dict["evaluate"]["max_general_drop"] = 0.05
    state = finetune(recipe=Recipe.model_validate(recipe_dict), output_dir=str(tmp_path / "runs"), return_state=True)
    assert state.name == "Rejected", state.message
    assert f"quality gate failed: general set faq: {key} fell " in state.message
    assert "more than evaluate.max_general_drop 0.05" in state.message
    assert sorted(p.name for p in (tmp_path / "published").iterdir()) == ["latest", run.push.release]
    # The dashboard's gain table says why, and shows the general set's row beside the domain's.
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tiny-test-gain"])))
    gain = max(found, key=lambda a: a.created)
    assert gain.description.startswith("REJECTED by the quality gate") and "general sets (outside the domain): faq" in (
        gain.description
    )
    assert key in {row["metric"] for row in json.loads(gain.data)}


@pytest.mark.usefixtures("prefect_server")
def test_a_rejected_model_ends_the_run_as_rejected_and_publishes_nothing(recipe_dict, tmp_path, write_recipe):
    recipe_dict["train"]["args"]["num_train_epochs"] = 1
    recipe_dict["evaluate"] = {"gates": {"cosine_ndcg@10": 0.999}}
    result = finetune(recipe=Recipe.model_validate(recipe_dict), output_dir=str(tmp_path / "runs"), return_state=True)
    assert (result.type.value, result.name) == ("COMPLETED", "Rejected")  # a decision, not a crash
    run = result.result()
    assert run.outcome.decision == "rejected" and run.push is None
    message = run.outcome.reason
    assert "quality gate failed: cosine_ndcg@10 = " in message and "< 0.999 (short by " in message
    model_dir = Path(run.model_dir)
    assert f"the model is kept at {model_dir}".lower() in message.lower()
    assert (model_dir / "model.safetensors").exists()
    assert not (tmp_path / "published").exists()

    # On the command line a rejection is one red line and exit 1, as a failed check is.
    refused = run_cli(write_recipe(recipe_dict), tmp_path / "runs")
    assert refused.exit_code == 1 and "Rejected: quality gate failed: cosine_ndcg@10" in refused.output
    assert "Traceback" not in refused.output


def test_training_prompts_are_the_prompts_both_models_are_measured_with(tmp_path, recipe_dict):
    from embedforge.recipe import Recipe

    recipe_dict["train"]["args"]["prompts"] = {"anchor": "query: ", "positive": "passage: "}
    config = Recipe.model_validate(recipe_dict).evaluate
    assert config.prompts == {"anchor": "query: ", "positive": "passage: "}
    (evaluator,) = build_evaluators(_splits(tmp_path, make_pairs(20)), "test", config)
    assert (evaluator.query_prompt, evaluator.corpus_prompt) == ("query: ", "passage: ")
    # One prompt for every column, as the trainer reads a plain string.
    recipe_dict["train"]["args"]["prompts"] = "Represent this: "
    assert Recipe.model_validate(recipe_dict).evaluate.prompts == {
        "anchor": "Represent this: ",
        "positive": "Represent this: ",
    }
