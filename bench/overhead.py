"""The pipeline's own cost: `embedforge run` of the demo recipe against bench/plain_st.py, alternated A B A B.

Each run is a fresh process timed by /usr/bin/time (wall, peak RSS); time to the first training step is
when the trainer begins (embedforge logs "Training started", the plain script prints TRAIN_BEGIN); training is
the trainer's own train_runtime, so the fixed cost before and after it shows apart from the training.
    python bench/overhead.py [--pairs 3] [--repo DIR]    # DIR: a checkout to measure instead of this one
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(command: list[str], cwd: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(cwd)}
    env.pop("PREFECT_API_URL", None)
    timing = tempfile.NamedTemporaryFile(suffix=".time", delete=False).name
    start = time.time()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", "-o", timing, *command], cwd=cwd, env=env, capture_output=True, text=True
    )
    output = done.stdout + done.stderr
    if done.returncode:
        raise SystemExit(f"{command} failed:\n{output[-3000:]}")
    wall, rss_kb = Path(timing).read_text().split()[-2:]
    return {
        "wall": float(wall),
        "rss_gb": int(rss_kb) / 1e6,
        "first_step": _train_begin(output) - start,
        "training": float(re.search(r"train_runtime['\"]: '?([\d.]+)", output).group(1)),
        "ndcg": re.search(r"cosine_ndcg@10: base ([\d.]+) -> fine-tuned ([\d.]+)", output).groups(),
    }


def _train_begin(output: str) -> float:
    plain = re.search(r"TRAIN_BEGIN ([\d.]+)", output)
    if plain:
        return float(plain.group(1))
    clock = re.search(r"(\d\d:\d\d:\d\d\.\d+) \| INFO .* Training started", output).group(1)
    return datetime.combine(datetime.now().date(), datetime.strptime(clock, "%H:%M:%S.%f").time()).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=HERE.parent)
    options = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    embedforge = [
        sys.executable,
        "-m",
        "embedforge",
        "run",
        "deployments/demo-minilm.yaml",
        "--output-dir",
        str(out),
        "--set",
        f"push.local_dir={out}/published",
        "--force",  # the same data every time: without it, runs after the first are "up to date" and train nothing
    ]
    plain = [sys.executable, str(HERE / "plain_st.py")]
    runs: dict[str, list[dict]] = {"embedforge": [], "plain": []}
    for pair in range(options.pairs):
        for name, command in (("embedforge", embedforge), ("plain", plain)):
            runs[name].append(_run(command, options.repo))
            print(name, pair + 1, runs[name][-1], flush=True)
    _report(runs)


def _report(runs: dict[str, list[dict]]) -> None:
    mean = {
        name: {k: statistics.mean(r[k] for r in rs) for k in ("wall", "rss_gb", "first_step", "training")}
        for name, rs in runs.items()
    }
    ours, plain = mean["embedforge"], mean["plain"]
    print("| | wall time (s) | time to first step (s) | training (s) | peak RSS (GB) | NDCG@10 base → fine-tuned |")
    print("|:--|--:|--:|--:|--:|:--|")
    for name, stats in mean.items():
        walls = ", ".join(f"{r['wall']:.0f}" for r in runs[name])
        print(
            f"| {name} | {stats['wall']:.1f} ({walls}) | {stats['first_step']:.1f} | {stats['training']:.1f} | "
            f"{stats['rss_gb']:.2f} | "
            f"{' → '.join(runs[name][0]['ndcg'])} |"
        )
    print(
        f"\nwall-time ratio {ours['wall'] / plain['wall']:.3f}; first-step overhead "
        f"{ours['first_step'] - plain['first_step']:+.1f} s; "
        f"training ratio {ours['training'] / plain['training']:.3f}; RSS ratio {ours['rss_gb'] / plain['rss_gb']:.2f}"
    )


if __name__ == "__main__":
    main()
