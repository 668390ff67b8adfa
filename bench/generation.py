"""Generation against a local chat-completions server with a fixed latency: wall time against the ideal.

Ideal = requests x latency / concurrency. Each concurrency gets a fresh cache and the same chunks; then
one rerun after a tenth of the chunks changed counts its requests (it should ask for those alone).

    .venv/bin/python bench/generation.py --chunks 256 --latency 0.2 --concurrency 1 8 32
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from embedforge.config.corpus import GenerateConfig  # noqa: E402
from embedforge.data_reports import CorpusReport  # noqa: E402
from embedforge.tasks.generate import generate_pairs  # noqa: E402

from llm_server import LocalLLM  # noqa: E402


def _chunks(folder: Path, count: int, changed: int = 0) -> CorpusReport:
    rows = [
        {
            "chunk_id": f"doc{i // 4}.md#{i % 4}",
            "doc_id": f"doc{i // 4}.md",
            "title": f"Page {i // 4}",
            "text": f"The keeper of chamber {i} writes a ledger{' again' if i < changed else ''} every evening.",
            "digest": f"{i:08d}{'c' if i < changed else 'o'}",
        }
        for i in range(count)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / "chunks.parquet")
    return CorpusReport(documents=count // 4, chunks=count, path=str(folder / "chunks.parquet"))


def _run(llm: LocalLLM, corpus: CorpusReport, concurrency: int, cache: Path, out: Path) -> float:
    from prefect import flow

    endpoint = {"base_url": llm.url, "model": "local-model", "max_in_flight": concurrency}
    # Two batches per slot: a batch holds one slot and sends its requests one after another.
    batch = max(1, corpus.chunks // (2 * concurrency))
    config = GenerateConfig(method="llm", llm=endpoint, batch_size=batch, workers=concurrency)
    started = time.perf_counter()
    flow(name="bench-generation")(generate_pairs)(config, corpus, str(cache), str(out))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    print("| concurrency | requests | wall (s) | ideal (s) | wall / ideal | most in flight |")
    print("|--:|--:|--:|--:|--:|--:|")
    for concurrency in options.concurrency:
        with LocalLLM() as llm:
            llm.state.latency = options.latency
            corpus = _chunks(root / f"c{concurrency}", options.chunks)
            wall = _run(llm, corpus, concurrency, root / f"cache{concurrency}", root / f"out{concurrency}")
            requests = len(llm.state.completions())
            ideal = requests * options.latency / concurrency
            most = llm.state.most_in_flight
            print(f"| {concurrency} | {requests} | {wall:.1f} | {ideal:.1f} | {wall / ideal:.2f} | {most} |")
            if concurrency == options.concurrency[-1]:
                changed = _chunks(root / "changed", options.chunks, changed=options.chunks // 10)
                before = len(llm.state.completions())
                _run(llm, changed, concurrency, root / f"cache{concurrency}", root / "out-changed")
                print(
                    f"\nRerun after {options.chunks // 10} of {options.chunks} chunks changed: "
                    f"{len(llm.state.completions()) - before} requests"
                )


if __name__ == "__main__":
    main()
