"""The demo's documents without their summaries: how far crop and inverse cloze get with no labelled pair.

The supervised demo (deployments/demo-minilm.yaml) trains on (summary -> docstring) pairs. Here the
model sees only the docstrings of the demo's training modules, as documents, and makes its own pairs;
its test split is the demo's own (the same modules, seed and shares), real summaries as queries.

    .venv/bin/python bench/corpus_demo.py            # both methods; prints the figures for RESULTS.md
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "deployments" / "demo-minilm.yaml"


def _demo_split(folder: Path) -> tuple[Path, Path]:
    """The demo's test pairs as a file of their own, and its training modules' docstrings as documents."""
    from embedforge.tasks.split import _assign_groups

    rows = [json.loads(line) for line in (ROOT / "deployments" / "data" / "python-docs.jsonl").open()]
    recipe = yaml.safe_load(DEMO.read_text())
    eval_size, test_size, seed = recipe["split"]["eval_size"], recipe["split"]["test_size"], 42
    groups = datasets.Dataset.from_dict({"group": sorted({row["module"] for row in rows})})
    shares = {"train": 1 - eval_size - test_size, "eval": eval_size, "test": test_size}
    assignment = _assign_groups(groups, shares, seed)
    folder.mkdir(parents=True, exist_ok=True)
    test = folder / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows if assignment[r["module"]] == "test"))
    documents = folder / "docstrings.jsonl"
    kept = [r for r in rows if assignment[r["module"]] == "train"]
    documents.write_text(
        "".join(json.dumps({"id": f"{r['module']}-{i}", "text": r["positive"]}) + "\n" for i, r in enumerate(kept))
    )
    return test, documents


def _recipe(method: str, test: Path, documents: Path, folder: Path) -> Path:
    recipe = yaml.safe_load(DEMO.read_text())
    recipe["name"] = f"bench-{method.replace('_', '-')}"
    recipe["corpus"] = {"path": str(documents), "chunk_tokens": 128, "overlap": 16, "generate": {"method": method}}
    recipe["ingest"] = {"name": "python-docs"}
    recipe["split"] = {"test_file": str(test), "eval_size": 0.1}
    recipe["push"] = {"local_dir": str(folder / "published")}
    recipe.pop("deployment", None)
    path = folder / f"{method}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    test, documents = _demo_split(folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for method in sys.argv[1:] or ["inverse_cloze", "crop"]:
        command = [sys.executable, "-m", "embedforge", "run", str(_recipe(method, test, documents, folder))]
        done = subprocess.run(command + ["--output-dir", str(folder / "runs")], env=env, capture_output=True, text=True)
        figures = re.search(r"^(\S+): base ([\d.]+) -> fine-tuned ([\d.]+)$", done.stdout, re.M)
        kept = re.search(r"Kept (\d+) of (\d+) generated pairs", done.stderr)
        wall = re.search(r"Wall time: (.*)$", done.stdout, re.M)
        print(
            method,
            figures.groups() if figures else done.stderr[-2000:],
            kept.groups() if kept else "",
            wall.group(1) if wall else "",
        )


if __name__ == "__main__":
    main()
