"""The generate-pairs stage against a plain asyncio client, on the same endpoint, in the same run.

The endpoint is the stand-in chat-completions server (tests/llm_server.py) in its own process, answering
every request after a fixed latency. Each configuration (requests, latency, in flight) runs the plain
client first (what a user writes instead: httpx.AsyncClient, a semaphore, the same prompts), then the
stage on a fresh cache with the endpoint's Prefect concurrency limit set to the same number in flight;
then the stage again after a tenth of the chunks changed, counting the requests it sends.

    .venv/bin/python bench/generation.py --runs 1024:0.2:32 2048:0:64
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

HERE = Path(__file__).resolve().parent

from embedforge import generation  # noqa: E402
from embedforge.config.corpus import GenerateConfig, LLMConfig  # noqa: E402
from embedforge.data_reports import CorpusReport  # noqa: E402
from embedforge.tasks.generate import generate_pairs  # noqa: E402


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


async def _plain(url: str, corpus: CorpusReport, in_flight: int) -> float:
    """What a user writes instead of the stage: every chunk asked once, `in_flight` at a time, queries parsed."""
    llm = LLMConfig(base_url=url, model="local-model")
    chunks = pd.read_parquet(corpus.path).to_dict("records")
    semaphore = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)

    async def ask(http: httpx.AsyncClient, chunk: dict) -> list[str]:
        prompt = generation.prompt_for(llm, chunk["text"], chunk["title"], 1)
        body = {"model": llm.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": llm.max_tokens}
        async with semaphore:
            response = await http.post("/chat/completions", json=body)
        response.raise_for_status()
        return generation.parse_queries(response.json()["choices"][0]["message"]["content"], 1)

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        answers = await asyncio.gather(*(ask(http, chunk) for chunk in chunks))
    assert all(answers)
    return time.perf_counter() - started


def _stage(url: str, corpus: CorpusReport, in_flight: int, cache: Path, out: Path, **settings) -> float:
    """The generate-pairs stage inside a flow, timed from inside it: the stage's own cost, not the flow's start."""
    from prefect import flow

    endpoint = {"base_url": url, "model": "local-model", "max_in_flight": in_flight, "api_key_env": None}
    config = GenerateConfig(method="llm", llm=endpoint, **settings)

    @flow(name="bench-generation")
    def timed() -> float:
        started = time.perf_counter()
        generate_pairs(config, corpus, str(cache), str(out))
        return time.perf_counter() - started

    return timed()


def _stats(url: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + "/stats").json()


def _one(spec: str, root: Path, settings: dict) -> str:
    requests, latency, in_flight = int(spec.split(":")[0]), float(spec.split(":")[1]), int(spec.split(":")[2])
    server = subprocess.Popen(
        [sys.executable, str(HERE.parent / "tests" / "llm_server.py"), str(latency)], stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip()
        corpus = _chunks(root / spec.replace(":", "-"), requests)
        plain = asyncio.run(_plain(url, corpus, in_flight))
        sent_before, cache = _stats(url)["completions"], root / f"cache-{spec.replace(':', '-')}"  # read: reset
        stage = _stage(url, corpus, in_flight, cache, root / "out", **settings)
        stats = _stats(url)
        changed = _chunks(root / "changed", requests, changed=requests // 10)
        _stage(url, changed, in_flight, cache, root / "out-changed", **settings)
        rerun = _stats(url)["completions"] - stats["completions"]
    finally:
        server.terminate()
    ideal = requests * latency / in_flight
    return (
        f"| {requests:,} | {latency * 1000:.0f} ms | {in_flight} | {plain:.2f} s ({requests / plain:.0f}/s) "
        f"| {stage:.2f} s ({requests / stage:.0f}/s) | {stage / plain:.2f}× | {ideal:.1f} s "
        f"| {stats['completions'] - sent_before} | {stats['most_in_flight']} | {rerun} of {requests // 10} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", nargs="+", default=["1024:0.2:32", "2048:0:64"], help="requests:latency:in_flight")
    parser.add_argument("--workers", type=int, help="corpus.generate.workers (default: the recipe's default)")
    parser.add_argument("--batch-size", type=int, help="corpus.generate.batch_size (default: the recipe's default)")
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-generation-"))
    settings = {key: value for key in ("workers", "batch_size") if (value := getattr(options, key)) is not None}
    rows = [_one(spec, root, settings) for spec in options.runs]
    print(
        "| requests | latency | in flight | plain client | embedforge | embedforge / plain | ideal "
        "| stage requests | most in flight | rerun requests after a tenth changed |"
    )
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
