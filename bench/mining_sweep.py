"""Hard-negative mining over data sets and seeds: no mining, fixed settings, NV-Retriever's, and mine.choose.

Each run is `embedforge run <recipe>` with the setting and the trainer's seed set on the command line (the
split's seed stays the recipe's, so every run sees the same split), publishing to a folder of its own so
no run is compared with another's release. One JSON line per run goes to --out; --table prints the
RESULTS.md table from those lines: the mean test figure per setting, its spread over the seeds, and the
difference from no mining seed by seed.

    .venv/bin/python bench/icd10_data.py      # the second data set (pip install -e '.[bench]')
    .venv/bin/python bench/mining_sweep.py --data demo icd10 --seeds 42 43 44 --out sweep.jsonl
    .venv/bin/python bench/mining_sweep.py --table sweep.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"demo": ROOT / "deployments" / "demo-minilm.yaml", "icd10": ROOT / "bench" / "icd10-minilm.yaml"}
CHOOSE = "[{relative_margin: 0.1}, {relative_margin: 0.05, range_max: 100}]"
SETTINGS = {
    "none": [],
    "unguarded": ["mine.num_negatives=1"],  # the hardest other-group passage, no guard against false negatives
    "margin 0.1": ["mine.relative_margin=0.1"],  # below 90 % of the positive's score
    "NV-Retriever": ["mine.relative_margin=0.05", "mine.range_max=100"],  # below 95 %, over a wide window
    "ST docs": ["mine.range_min=10", "mine.range_max=100", "mine.max_score=0.8"],  # the library's docs' guards
    "choose": [f"mine.choose={CHOOSE}"],
}


def run(data: str, seed: int, setting: str, folder: Path) -> dict:
    """One run of the recipe with this setting and seed; the figures it printed and logged."""
    here = folder / f"{data}-{seed}-{setting.replace(' ', '-')}"
    sets = [f"train.args.seed={seed}", f"push.local_dir={here / 'published'}", *SETTINGS[setting]]
    command = [sys.executable, "-m", "embedforge", "run", str(RECIPES[data]), "--output-dir", str(here / "runs")]
    command += [arg for pair in sets for arg in ("--set", pair)]
    start = time.monotonic()
    done = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, cwd=ROOT)
    figures = re.search(r"^(\S+): base ([\d.]+) -> fine-tuned ([\d.]+)$", done.stdout, re.M)
    if not figures:
        raise SystemExit(f"{data} seed {seed} {setting}: no figures\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    mined = re.findall(r"Mined \d+ negative\(s\) for (\d+) of (\d+) training pairs", done.stderr)
    trials = re.findall(r"Mining candidate (.+?): eval \S+ ([\d.]+)( \(chosen\))?", done.stderr)
    return {
        "data": data,
        "seed": seed,
        "setting": setting,
        "metric": figures.group(1),
        "base": float(figures.group(2)),
        "test": float(figures.group(3)),
        "mined": [[int(n) for n in pair] for pair in mined],
        "trials": [
            {"candidate": name, "eval": float(figure), "chosen": bool(chosen)} for name, figure, chosen in trials
        ],
        "wall_s": round(time.monotonic() - start, 1),
    }


def table(lines: list[dict]) -> str:
    """Mean ± standard deviation over the seeds, the difference from no mining (mean, and seed by seed), and what
    mine.choose picked for each seed with its candidates' eval figures."""
    out = []
    for data in dict.fromkeys(line["data"] for line in lines):
        rows = [line for line in lines if line["data"] == data]
        none = {line["seed"]: line["test"] for line in rows if line["setting"] == "none"}
        out += [f"\n**{data}** (`{rows[0]['metric']}`, base {rows[0]['base']:.4f}, seeds {sorted(none)})\n"]
        out += ["| setting | test, mean ± sd | min – max | vs. no mining, mean | per seed | wall, fastest run |"]
        out += ["|:--|--:|--:|--:|:--|--:|"]
        for setting in dict.fromkeys(line["setting"] for line in rows):
            runs = sorted((line for line in rows if line["setting"] == setting), key=lambda line: line["seed"])
            tests = [line["test"] for line in runs]
            diffs = [line["test"] - none[line["seed"]] for line in runs if line["seed"] in none]
            sd = statistics.stdev(tests) if len(tests) > 1 else 0.0
            per_seed = ", ".join(f"{d:+.4f}" for d in diffs)
            wall = min(line["wall_s"] for line in runs)  # the least disturbed by other work on the machine
            out.append(
                f"| {setting} | {statistics.fmean(tests):.4f} ± {sd:.4f} | {min(tests):.4f} – {max(tests):.4f} "
                f"| {statistics.fmean(diffs):+.4f} | {per_seed} | {wall:.0f} s |"
            )
        picks = [line for line in rows if line["trials"]]
        for line in sorted(picks, key=lambda line: line["seed"]):
            figures = ", ".join(f"{t['candidate']} {t['eval']:.4f}{' (chosen)' * t['chosen']}" for t in line["trials"])
            out.append(f"\n- choose, seed {line['seed']}: {figures}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=Path("mining-sweep.jsonl"))
    parser.add_argument("--table", type=Path, help="print the table of a finished sweep's JSON lines")
    args = parser.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.table.open()]))
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-mining-"))
    for seed in args.seeds:
        for data in args.data:
            for setting in args.settings:
                line = run(data, seed, setting, folder)
                with args.out.open("a") as out:
                    out.write(json.dumps(line) + "\n")
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
