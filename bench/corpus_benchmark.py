"""Training from documents alone, measured on real queries: base vs each no-LLM method vs a supervised fine-tune.

Three corpora, all from PyPI packages, all with queries people wrote:
- python-docs: the demo's docstrings, without their one-line summaries, as documents; the summaries of its test
  split's modules are the queries. Supervised: the demo itself (summary -> docstring pairs of its training modules).
- python-docs-all: the same documents, every one of the 840 summaries a query (no supervised row).
- zh-docs: the same protocol in Chinese, which the base model was not trained on: the docstrings of six packages
  that document their API in Chinese (bench/zh_docs_data.py); the summaries of a third of the modules are the
  queries. Supervised: the summary -> docstring pairs of the other modules.
- icd10: ICD-10-CM (simple-icd-10-cm) categories as documents, each the descriptions of its codes; queries are
  the clinical terms the tabular list gives each code ("Salmonellosis" -> "Salmonella enteritis"), which never
  appear in the documents. Supervised: the same kind of pairs from other categories.

Each run is `embedforge run` of the recipe the README recommends for documents, with the corpus and test file
swapped in; the figure is its metrics.json: test-split NDCG@10 with the paired 95 % bootstrap interval of the
gain. Seeds vary the trainer and the pair generation; the test split stays the same.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/corpus_benchmark.py --corpus zh-docs --seeds 42 43 44 --methods lead supervised
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from corpus_demo import DEMO, _demo_split  # noqa: E402
from icd10_data import CATEGORIES, SEED, pairs  # noqa: E402
from zh_docs_data import pairs as zh_pairs  # noqa: E402

PYTHON_DOCS = ROOT / "deployments" / "data" / "python-docs.jsonl"  # the demo's pairs: summary -> docstring
DOCS_RECIPE = ROOT / "deployments" / "demo-minilm-docs.yaml"  # the README's recommended documents recipe


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def icd10(folder: Path) -> tuple[Path, Path, Path]:
    """(documents, test pairs, supervised training pairs): test categories' documents and terms, other categories'
    pairs for the supervised model."""
    rows = pairs()
    categories = sorted({row["category"] for row in rows})
    rng = random.Random(SEED)
    tested = set(rng.sample(categories, CATEGORIES))
    trained = set(rng.sample(sorted(set(categories) - tested), CATEGORIES))
    descriptions: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["category"] in tested:
            descriptions.setdefault(row["category"], {})[row["code"]] = row["positive"]
    documents = [
        {"id": category, "text": " ".join(f"{text.rstrip('.')}." for _, text in sorted(codes.items()))}
        for category, codes in sorted(descriptions.items())
    ]
    test = [{"anchor": r["anchor"], "positive": r["positive"]} for r in rows if r["category"] in tested]
    seen = {text for row in test for text in (row["anchor"], row["positive"])}
    # A term or description that is also a test pair's (the same wording under two categories) would be memory.
    train = [
        {"anchor": r["anchor"], "positive": r["positive"], "category": r["category"]}
        for r in rows
        if r["category"] in trained and r["anchor"] not in seen and r["positive"] not in seen
    ]
    return (
        _write(folder / "documents.jsonl", documents),
        _write(folder / "test.jsonl", test),
        _write(folder / "supervised.jsonl", train),
    )


def _python_docs_rows() -> list[dict]:
    return [json.loads(line) for line in PYTHON_DOCS.open()]


def python_docs(folder: Path) -> tuple[Path, Path, None]:
    """Every docstring the search covers as a document, none with its summary; the test modules' summaries are
    the queries. As ICD-10-CM's documents are the tested categories: the documents are what a user searches."""
    test, _ = _demo_split(folder)
    rows = _python_docs_rows()
    documents = [{"id": f"{row['module']}-{i}", "text": row["positive"]} for i, row in enumerate(rows)]
    return _write(folder / "docstrings.jsonl", documents), test, None  # supervised: the demo recipe itself


def python_docs_all(folder: Path) -> tuple[Path, Path, None]:
    """The same documents, and every summary a query: documents alone train on no summary, so all 840 can test
    it, with an interval about half as wide as the 208 of the test modules. No supervised row: it trains on them."""
    documents, _, _ = python_docs(folder)
    rows = _python_docs_rows()
    return (
        documents,
        _write(folder / "test-all.jsonl", [{"anchor": r["anchor"], "positive": r["positive"]} for r in rows]),
        None,
    )


def zh_docs(folder: Path) -> tuple[Path, Path, Path]:
    """Every Chinese docstring, without its summary, as a document; the summaries of a third of the modules
    (drawn whole, so no test query's module is trained on) are the queries, the rest's pairs the supervised data."""
    rows = zh_pairs()
    modules = sorted({row["module"] for row in rows})
    random.Random(SEED).shuffle(modules)
    tested: set[str] = set()
    for module in modules:  # whole modules, until a third of the pairs
        if sum(row["module"] in tested for row in rows) < len(rows) / 3:
            tested.add(module)
    documents = [{"id": f"{row['module']}-{i}", "text": row["positive"]} for i, row in enumerate(rows)]
    test = [{"anchor": r["anchor"], "positive": r["positive"]} for r in rows if r["module"] in tested]
    train = [
        {"anchor": r["anchor"], "positive": r["positive"], "category": r["module"]}
        for r in rows
        if r["module"] not in tested
    ]
    return (
        _write(folder / "docstrings.jsonl", documents),
        _write(folder / "test.jsonl", test),
        _write(folder / "supervised.jsonl", train),
    )


CORPORA = {"icd10": icd10, "python-docs": python_docs, "python-docs-all": python_docs_all, "zh-docs": zh_docs}


def recipe(corpus: str, method: str, seed: int, files: tuple, folder: Path) -> Path:
    documents, test, supervised = files
    if method == "supervised":
        made = yaml.safe_load(DEMO.read_text())
        if supervised:
            made["ingest"] = {"name": corpus, "path": str(supervised), "keep": ["category"]}
            made["split"] = {"test_file": str(test), "group_by": "category", "eval_size": 0.1}
    else:
        made = yaml.safe_load(DOCS_RECIPE.read_text())
        made["corpus"]["path"] = str(documents)
        made["corpus"]["generate"] |= {"method": method, "seed": seed}
        made["ingest"] = {"name": corpus}
        made["split"] = {"test_file": str(test), "eval_size": 0.1, "seed": seed}
    made["name"] = f"bench-{corpus}-{method.replace('_', '-')}-{seed}"
    made["train"]["args"]["seed"] = seed
    made["push"] = {"local_dir": str(folder / "published")}
    made.pop("deployment", None)
    path = folder / f"{made['name']}.yaml"
    path.write_text(yaml.safe_dump(made))
    return path


def run(path: Path, folder: Path, overrides: list[str]) -> dict:
    command = [sys.executable, "-m", "embedforge", "run", str(path), "--output-dir", str(folder / "runs")]
    command += [arg for override in overrides for arg in ("--set", override)]
    done = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    name = yaml.safe_load(path.read_text())["name"]
    runs = sorted((folder / "runs" / name).glob("2*/metrics.json"))
    if done.returncode not in (0, 1) or not runs:
        return {"recipe": name, "error": (done.stdout + done.stderr)[-1500:]}
    metrics = json.loads(runs[-1].read_text())
    key = metrics["headline"]
    kept = next((line for line in done.stderr.splitlines() if "Kept " in line and "generated pairs" in line), "")
    return {
        "recipe": name,
        "base": metrics["base"][key],
        "finetuned": metrics["finetuned"][key],
        "intervals": metrics.get("intervals", {}),
        "kept": kept.split(" - ", 1)[-1],
        "summary": done.stdout[done.stdout.find("Run directory") :].strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", choices=sorted(CORPORA), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--methods", nargs="+", default=["inverse_cloze", "crop", "supervised"])
    parser.add_argument("--out", type=Path, default=None, help="JSON lines of every run's figures")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value, as embedforge run")
    args = parser.parse_args()
    if args.corpus == "python-docs-all" and "supervised" in args.methods:
        parser.error("python-docs-all tests every summary, so no supervised model can train on any: drop supervised")
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{args.corpus}-"))
    files = CORPORA[args.corpus](folder)
    out = args.out or folder / "results.jsonl"
    for seed in args.seeds:
        for method in args.methods:
            result = {"corpus": args.corpus, "method": method, "seed": seed, "overrides": args.overrides} | run(
                recipe(args.corpus, method, seed, files, folder), folder, args.overrides
            )
            with out.open("a") as results:
                results.write(json.dumps(result) + "\n")
            print(json.dumps({k: v for k, v in result.items() if k != "summary"}), flush=True)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
