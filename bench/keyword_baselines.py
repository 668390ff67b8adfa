"""Base, fine-tuned, BM25 and hybrid on the same test queries, over seeds: does the fine-tune beat keyword search?

Runs a recipe (the offline demo by default) once per split seed, each into a fresh output folder, and prints the
headline of each with its 95 % interval, and fine-tuned minus BM25 with its paired interval (metrics.json).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/keyword_baselines.py --recipe deployments/demo-minilm.yaml --seeds 42 43 44
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _run(recipe: str, seed: int, out: Path) -> tuple[dict, float]:
    command = [BIN / "embedforge", "run", recipe, "--output-dir", out, "--set", f"split.seed={seed}"]
    command += ["--set", f"push.local_dir={out / 'published'}"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    (out / "terminal.txt").write_text(done.stdout + done.stderr)  # what a person would have read
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: embedforge run failed:\n{done.stderr[-3000:]}")
    (metrics,) = out.glob("*/*/metrics.json")
    return json.loads(metrics.read_text()), time.perf_counter() - started


def _row(seed: int, metrics: dict, wall: float) -> str:
    head, found = metrics["headline"], metrics["intervals"]

    def ci(name: str) -> str:
        return f" [{found[name]['low']:+.4f}, {found[name]['high']:+.4f}]" if name in found else ""

    base, tuned = metrics["base"][head], metrics["finetuned"][head]
    bm25, hybrid = metrics["baselines"]["bm25"][head], metrics["baselines"]["hybrid"][head]
    return (
        f"| {seed} | {found['gain']['n']} | {bm25:.4f} | {hybrid:.4f} | {base:.4f} | {tuned:.4f} "
        f"| {tuned - base:+.4f}{ci('gain')} | {tuned - bm25:+.4f}{ci('over_bm25')} | {wall / 60:.1f} min |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="deployments/demo-minilm.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="keyword-baselines-"))
    rows = [_row(seed, *_run(options.recipe, seed, root / str(seed))) for seed in options.seeds]
    print(f"{options.recipe}, headline as metrics.json names it; each run's terminal output under {root}")
    columns = ["split seed", "test queries", "BM25", "hybrid", "base", "fine-tuned", "fine-tuned - base"]
    print("| " + " | ".join(columns + ["fine-tuned - BM25", "wall"]) + " |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
