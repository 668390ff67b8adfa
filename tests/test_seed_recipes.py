"""Each seed card in ../shared/seeds is reproduced by its recipe in deployments/, value by value."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from embedforge.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO.parent / "shared" / "seeds"
RECIPE_OF_CARD = {
    "000_1886a4390a1d9061.txt": "qwen3-embedding-0.6b-dnd.yaml",
    "001_bb2a61ede57a7d6c.txt": "msmarco-distilbert-quran-id.yaml",
    "002_d263e78c95c0aea3.txt": "arctic-embed-l-llm-blog.yaml",
    "003_c6291f1095176cdb.txt": "deberta-v3-xsmall-snli.yaml",
    "004_465cd68e0ccb2012.txt": "bge-small-en-v1.5-recipes.yaml",
}
# Card arguments that embedforge's push stage stands for: one gated commit per release.
PUSH_ARGS = {"push_to_hub", "hub_model_id", "hub_strategy"}

pytestmark = pytest.mark.skipif(not SEEDS.is_dir(), reason=f"seed cards not found at {SEEDS}")


def _value(text: str):
    text = text.strip()
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _card(name: str) -> dict:
    text = (SEEDS / name).read_text(encoding="utf-8", errors="replace")
    non_default = text.split("#### Non-Default Hyperparameters", 1)[1].split("#### All Hyperparameters", 1)[0]
    all_args = text.split("#### All Hyperparameters", 1)[1].split("</details>", 1)[0]
    loss_json = re.search(r"\* Loss: \[<code>(\w+)</code>\].*?```json\s*(\{.*?\})\s*```", text, re.S)
    evaluation = text.split("## Evaluation", 1)[1].split("## Training Details", 1)[0] if "## Evaluation" in text else ""
    return {
        "base_model": re.search(r"^base_model: (\S+)", text, re.M).group(1),
        "revision": re.search(r"at revision ([0-9a-f]{40})", text).group(1),
        "max_seq_length": int(re.search(r"\*\*Maximum Sequence Length:\*\* (\d+)", text).group(1)),
        "args": {k: _value(v) for k, v in re.findall(r"^- `(\w+)`: (.*)$", non_default, re.M)},
        "seed": _value(re.search(r"^- `seed`: (.*)$", all_args, re.M).group(1)),
        "loss": (loss_json.group(1), json.loads(loss_json.group(2))),
        "evaluators": set(re.findall(r"^\* Dataset: `([\w-]+)`", evaluation, re.M)),
    }


def _evaluator_names(recipe) -> set[str]:
    sources = recipe.split.eval_sources or [recipe.ingest]
    names = set()
    for source in sources:
        if source.kind == "retrieval" and recipe.evaluate.matryoshka_dims:
            names |= {f"{source.name + '_' if source.name else ''}dim_{d}" for d in recipe.evaluate.matryoshka_dims}
        elif source.name:
            names.add(source.name)
    return names


@pytest.mark.parametrize("card_name", sorted(RECIPE_OF_CARD))
def test_recipe_reproduces_its_card(card_name):
    card = _card(card_name)
    recipe = load_recipe(REPO / "deployments" / RECIPE_OF_CARD[card_name])
    train = recipe.train

    assert train.base_model == card["base_model"] and train.base_model_revision == card["revision"]
    assert train.max_seq_length == card["max_seq_length"]
    assert train.args.get("seed", 42) == card["seed"]

    for key, value in card["args"].items():
        if key in PUSH_ARGS:
            continue
        assert key in train.args, f"{card_name}: {key} missing from the recipe"
        assert train.args[key] == value, f"{card_name}: {key} is {train.args[key]!r}, the card says {value!r}"
    extra = set(train.args) - set(card["args"])
    assert extra <= ({"save_strategy"} if card["args"].get("load_best_model_at_end") else set()), extra
    if card["args"].get("push_to_hub"):
        assert recipe.push.full_repo_id == card["args"]["hub_model_id"]

    loss_name, params = card["loss"]
    if loss_name == "MatryoshkaLoss":
        assert train.loss.name == params["loss"]
        assert train.loss.matryoshka_dims == params["matryoshka_dims"]
        assert train.loss.matryoshka_weights == params["matryoshka_weights"]
        assert train.loss.n_dims_per_step == params["n_dims_per_step"]
    else:
        assert train.loss.name == loss_name and train.loss.matryoshka_dims is None
        assert train.loss.args == params

    assert _evaluator_names(recipe) >= card["evaluators"]
