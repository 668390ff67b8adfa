"""Model cards: every section the seeds carry, a model-index that round-trips, and the gain table."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from huggingface_hub import ModelCard

from embedforge.flows.finetune import finetune
from embedforge.recipe import Recipe
from embedforge.reports import gain_table
from embedforge.types import Metrics

from conftest import make_pairs, make_recipe, write_jsonl

# The headings every seed card has (../shared/seeds), plus those of the evaluators each recipe uses.
SEED_SECTIONS = [
    "## Model Details",
    "### Model Description",
    "### Model Sources",
    "### Full Model Architecture",
    "## Usage",
    "### Direct Usage (Sentence Transformers)",
    "## Evaluation",
    "### Metrics",
    "## Training Details",
    "### Training Dataset",
    "### Training Hyperparameters",
    "#### Non-Default Hyperparameters",
    "#### All Hyperparameters",
    "### Framework Versions",
    "## Citation",
    "### BibTeX",
    "#### Sentence Transformers",
    "#### MultipleNegativesRankingLoss",
]
OUR_SECTIONS = ["## Fine-tuning Report", "### Gain over the Base Model", "### Data Fingerprint", "### Recipe"]


pytestmark = pytest.mark.usefixtures("prefect_server")


def _base(root: Path, master: Path) -> dict:
    shutil.copytree(master, root / "model")
    card = {
        "language": ["en"],
        "license": "apache-2.0",
        "base_model_id": "org/tiny-bert",
        "datasets": ["org/tiny-pairs"],
    }
    data = write_jsonl(root / "pairs.jsonl", make_pairs(120))
    return make_recipe(
        "card-test", str(root / "model"), data, train_args={"num_train_epochs": 2}, card=card, push={"enabled": False}
    )


@pytest.fixture(scope="module")
def matryoshka_run(tmp_path_factory, _tiny_model_master):
    root = tmp_path_factory.mktemp("mrl")
    recipe = _base(root, _tiny_model_master)
    recipe["train"]["loss"] = {"matryoshka_dims": [32, 16, 8]}
    recipe["train"]["args"].update(
        {
            "eval_strategy": "epoch",
            "save_strategy": "epoch",
            "load_best_model_at_end": True,
            "metric_for_best_model": "eval_tiny_validation_dim_16_cosine_ndcg@10",
        }
    )
    return finetune(recipe=Recipe.model_validate(recipe), output_dir=str(root / "runs"))


@pytest.fixture(scope="module")
def similarity_run(tmp_path_factory, _tiny_model_master):
    root = tmp_path_factory.mktemp("sts")
    recipe = _base(root, _tiny_model_master)
    topics = [p["context"] for p in make_pairs(60, seed=5)]
    pd.DataFrame(
        {"sentence1": topics[:40], "sentence2": topics[1:41], "score": [(i % 5) / 4 for i in range(40)]}
    ).to_csv(root / "sts.csv", index=False)
    pd.DataFrame({"s1": topics[:40], "s2": topics[20:60], "label": [i % 2 for i in range(40)]}).to_csv(
        root / "pairs.csv", index=False
    )
    recipe["split"] = {
        "eval_size": 0.5,
        "test_size": 0.5,
        "eval_sources": [
            {"name": "sts-dev", "kind": "similarity", "path": str(root / "sts.csv")},
            {
                "name": "pairs-dev",
                "kind": "classification",
                "path": str(root / "pairs.csv"),
                "columns": {"sentence1": "s1", "sentence2": "s2"},
            },
        ],
    }
    return finetune(recipe=Recipe.model_validate(recipe), output_dir=str(root / "runs"))


def _card(result) -> tuple[str, ModelCard, dict]:
    readme = Path(result.model_dir) / "README.md"
    metrics = json.loads((Path(result.run_dir) / "metrics.json").read_text())
    return readme.read_text(), ModelCard.load(readme), metrics


def _headings(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.startswith("#")}


def _model_index_matches(card: ModelCard, metrics: dict) -> int:
    checked = 0
    for result in card.data.eval_results:
        key = f"{result.dataset_type}_{result.metric_type}" if result.dataset_type != "unknown" else result.metric_type
        assert result.metric_value == pytest.approx(metrics["finetuned"][key]), key
        checked += 1
    return checked


def test_matryoshka_card_has_seed_sections_and_per_dim_results(matryoshka_run):
    text, card, metrics = _card(matryoshka_run)
    missing = [
        h
        for h in SEED_SECTIONS
        + OUR_SECTIONS
        + ["#### MatryoshkaLoss", "### Training Logs", "#### Information Retrieval"]
        if h not in _headings(text)
    ]
    assert not missing
    assert {r.dataset_type for r in card.data.eval_results} == {
        "tiny_validation_dim_32",
        "tiny_validation_dim_16",
        "tiny_validation_dim_8",
    }
    assert _model_index_matches(card, metrics) == 3 * 15  # every metric of every dim
    assert (
        card.data.base_model == "org/tiny-bert" and card.data.license == "apache-2.0" and card.data.language == ["en"]
    )
    assert card.data.datasets == ["org/tiny-pairs"]
    assert "loss:MatryoshkaLoss" in card.data.tags and any(t.startswith("dataset_size:") for t in card.data.tags)
    assert card.data.widget and "cosine_ndcg@10" in " ".join(card.data.to_dict()["metrics"])
    # Training-time evaluations on the eval split, one row per epoch, as the seeds' logs show.
    logs = text.split("### Training Logs", 1)[1].split("###", 1)[0]
    rows = [line for line in logs.splitlines() if re.match(r"^\| \**[12]\.0\** ", line)]
    assert "tiny_validation_dim_16_cosine_ndcg@10" in logs and len(rows) == 2
    assert "The bold row denotes the saved checkpoint" in logs  # load_best_model_at_end


def test_gain_table_in_card_matches_metrics_json(matryoshka_run):
    text, _, metrics = _card(matryoshka_run)
    section = text.split("### Gain over the Base Model", 1)[1].split("###", 1)[0]
    cells = r"^\| \**([\w@.-]+)\** \| ([\d.]+) \| ([\d.]+) \| ([+-][\d.]+) \| [^|]* \| ([\d.]+) \| ([\d.]+) \|$"
    rows = {m.group(1): tuple(float(m.group(n)) for n in range(2, 7)) for m in re.finditer(cells, section, re.M)}
    expected = gain_table(Metrics.model_validate(metrics))
    assert len(rows) == len(expected) > 0
    for row in expected:
        figures = (row["base"], row["fine-tuned"], row["delta"], row["BM25"], row["hybrid"])
        assert rows[row["metric"]] == pytest.approx(figures, abs=1e-4)
    assert f"**{metrics['headline']}**" in section
    gain = metrics["intervals"]["gain"]
    assert f"| [{gain['low']:+.4f}, {gain['high']:+.4f}] |" in section and "95 % bootstrap intervals" in section
    fingerprint = json.loads((Path(matryoshka_run.run_dir) / "data" / "ingested" / "tiny_validation.json").read_text())[
        "fingerprint"
    ]
    assert f"`tiny_validation`: `{fingerprint}`" in text
    assert "name: card-test" in text.split("### Recipe", 1)[1]


def test_similarity_and_classification_card(similarity_run):
    text, card, metrics = _card(similarity_run)
    assert not [
        h
        for h in SEED_SECTIONS + OUR_SECTIONS + ["#### Semantic Similarity", "#### Binary Classification"]
        if h not in _headings(text)
    ]
    types = {r.dataset_type: r.task_type for r in card.data.eval_results}
    assert types == {"sts-dev": "semantic-similarity", "pairs-dev": "binary-classification"}
    assert _model_index_matches(card, metrics) == len(metrics["finetuned"])  # every metric, none left out
    assert {"sts-dev_spearman_cosine", "sts-dev_pearson_cosine", "pairs-dev_cosine_ap", "pairs-dev_cosine_f1"} <= set(
        metrics["finetuned"]
    )
    assert metrics["headline"] == "sts-dev_spearman_cosine"


def test_dashboard_shows_front_matter_as_a_table_not_yaml(matryoshka_run):
    from embedforge.tasks.card import dashboard_markdown

    shown = dashboard_markdown((Path(matryoshka_run.model_dir) / "README.md").read_text())
    assert shown.startswith("| Field | Value |\n|:--|:--|\n| base_model | org/tiny-bert |\n| language | en |\n")
    assert "---" not in shown.split("# ", 1)[0] and "widget:" not in shown and "model-index:" not in shown
    assert "## Fine-tuning Report" in shown
