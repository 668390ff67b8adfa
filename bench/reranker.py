"""Keyword search, the embedder and two-stage search on the same test queries, over seeds: does the reranker help?

Runs a recipe with a `rerank:` section (the demo's by default) once per split seed, each into a fresh output folder,
and prints per seed: BM25, hybrid, base and fine-tuned embedder, the embedder + base reranker and the embedder +
fine-tuned reranker over its top k (from metrics.json and rerank-metrics.json), the reranker's gain over the
embedder alone with its paired 95 % interval, its latency per query on CPU, and the reranker stages' wall time
(from the run log's timestamps).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/reranker.py --recipe deployments/demo-minilm-rerank.yaml --seeds 42 43 44
    HF_HUB_OFFLINE=1 .venv/bin/python bench/reranker.py --recipe bench/icd10-minilm-rerank.yaml --seeds 42 43 44
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BIN = Path(sys.executable).parent
STAGES = ("train-reranker", "evaluate-reranker")


def _run(recipe: str, seed: int, out: Path, extra: list[str]) -> tuple[dict, dict, dict, float]:
    command = [BIN / "embedforge", "run", recipe, "--output-dir", out, "--set", f"split.seed={seed}"]
    command += ["--set", f"push.local_dir={out / 'published'}"] + [arg for item in extra for arg in ("--set", item)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    terminal = done.stdout + done.stderr
    (out / "terminal.txt").write_text(terminal)  # what a person would have read
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: embedforge run failed:\n{terminal[-3000:]}")
    (run_dir,) = out.glob("*/*/metrics.json")
    metrics = json.loads(run_dir.read_text())
    rerank = json.loads((run_dir.parent / "rerank-metrics.json").read_text())
    return metrics, rerank, _stage_seconds(terminal), time.perf_counter() - started


def _stage_seconds(terminal: str) -> dict[str, float]:
    """Each reranker stage's time: from the last log line of the stage before it to its own last line (a task's
    start is not logged; the quality gate is the stage before training the reranker)."""
    seconds, previous = {}, "check-quality-gate"
    for stage in STAGES:
        start, end = (_stamps(terminal, name) for name in (previous, stage))
        if start and end:
            seconds[stage] = (end[-1] - start[-1]).total_seconds()
        previous = stage
    return seconds


def _stamps(terminal: str, task: str) -> list[datetime]:
    found = re.findall(rf"^(\d\d:\d\d:\d\d\.\d+) \| \w+ +\| Task run '{task}-\w+'", terminal, re.MULTILINE)
    return [datetime.strptime(stamp, "%H:%M:%S.%f") for stamp in found]


def _row(seed: int, metrics: dict, rerank: dict, stages: dict, wall: float) -> str:
    head, figures, over = metrics["headline"], rerank["figures"], rerank["intervals"].get("over_embedder")
    bm25, hybrid = metrics["baselines"]["bm25"][head], metrics["baselines"]["hybrid"][head]
    gain = figures["fine-tuned reranker"] - figures["embedder"]
    band = f" [{over['low']:+.4f}, {over['high']:+.4f}]" if over else ""
    times = " / ".join(f"{stages.get(stage, float('nan')):.0f} s" for stage in STAGES)
    return (
        f"| {seed} | {len(rerank['queries']['embedder'])} | {bm25:.4f} | {hybrid:.4f} | {metrics['base'][head]:.4f} "
        f"| {figures['embedder']:.4f} | {figures['base reranker']:.4f} | {figures['fine-tuned reranker']:.4f} "
        f"| {gain:+.4f}{band} | {rerank['ms_per_query']:.1f} ms | {times} | {wall / 60:.1f} min |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="deployments/demo-minilm-rerank.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--set", action="append", default=[], help="a recipe override, as `embedforge run --set`")
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="reranker-bench-"))
    rows = [_row(seed, *_run(options.recipe, seed, root / str(seed), options.set)) for seed in options.seeds]
    print(f"{options.recipe} {' '.join(options.set)}; headline as metrics.json names it; terminals under {root}")
    columns = ["split seed", "test queries", "BM25", "hybrid", "base", "fine-tuned", "+ base reranker"]
    columns += ["+ fine-tuned reranker", "reranker gain, 95 % CI", "latency / query (CPU)"]
    print("| " + " | ".join(columns + ["train / evaluate reranker", "wall"]) + " |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
