"""How long `embedforge validate` takes now that it reads every row and document the run will read.

    python bench/validate.py [--rows 100000] [--repeats 3]

Times, each as a fresh process: `validate --recipe-only` on the demo (the file alone), `validate` on the demo
(840 pairs), on the documents demo (42 pages, chunked with the model's tokenizer) and on the demo recipe pointed
at a generated file of --rows pairs. Prints one markdown row per case: the median wall time, and the
data-reading part alone (the same checks, timed in this process after the imports). Every run starts with an
empty datasets cache, as a first check of new data does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
EMBEDFORGE = str(Path(sys.executable).parent / "embedforge")


def big_file(folder: Path, rows: int) -> Path:
    """Pairs shaped like the demo's (a summary line, a docstring), each distinct."""
    path = folder / f"pairs-{rows}.jsonl"
    with path.open("w") as out:
        for i in range(rows):
            row = {
                "anchor": f"Return the summary line of function number {i} in module m{i % 500}.",
                "positive": f"Function {i} of module m{i % 500} takes a value and returns its transformed copy; "
                f"it raises ValueError when the value number {i} is out of range.",
                "module": f"m{i % 500}",
            }
            out.write(json.dumps(row) + "\n")
    return path


def big_recipe(folder: Path, data: Path) -> Path:
    recipe = yaml.safe_load((REPO / "deployments" / "demo-minilm.yaml").read_text())
    recipe["name"] = "demo-minilm-big"
    recipe["ingest"] = {"name": "big", "path": str(data), "keep": ["module"]}
    path = folder / "demo-minilm-big.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def wall(*args: str) -> float:
    """One `embedforge validate` in a fresh process, with an empty datasets cache: a first check of new data."""
    env = {**os.environ, "HF_DATASETS_CACHE": tempfile.mkdtemp(prefix="bench-validate-cache-")}
    started = time.perf_counter()
    done = subprocess.run([EMBEDFORGE, "validate", *args], cwd=REPO, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    return time.perf_counter() - started


def reading(recipe: Path) -> float:
    """The data checks alone (every row and document read, chunked, compared), after the imports, cache empty."""
    import datasets

    from embedforge.checks.corpus import check_corpus
    from embedforge.checks.data import check_data
    from embedforge.recipe import load_recipe

    loaded = load_recipe(recipe)
    datasets.config.HF_DATASETS_CACHE = tempfile.mkdtemp(prefix="bench-validate-cache-")
    started = time.perf_counter()
    problems = check_data(loaded) + check_corpus(loaded)
    assert not problems, problems
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    from embedforge.logs import quiet_libraries

    quiet_libraries()
    folder = Path(tempfile.mkdtemp(prefix="bench-validate-"))
    demo, docs = REPO / "deployments" / "demo-minilm.yaml", REPO / "deployments" / "demo-minilm-docs.yaml"
    cases = [
        ("demo, --recipe-only", ["--recipe-only", str(demo)], None),
        ("demo (840 pairs)", [str(demo)], demo),
        ("documents demo (42 pages)", [str(docs)], docs),
    ]
    big = big_recipe(folder, big_file(folder, options.rows))
    cases.append((f"demo recipe on {options.rows:,} pairs", [str(big)], big))
    print(f"| case | validate, wall (median of {options.repeats}) | reading the data alone |")
    print("|:--|--:|--:|")
    for name, args, recipe in cases:
        times = [wall(*args) for _ in range(options.repeats)]
        read = f"{statistics.median(reading(recipe) for _ in range(options.repeats)):.2f} s" if recipe else "—"
        print(f"| {name} | {statistics.median(times):.2f} s | {read} |", flush=True)


if __name__ == "__main__":
    main()
