"""Generate: a query (or several) for every chunk, by an LLM or without one; the pairs are the training data.

Side effect: writes ``<dir>/generated.parquet`` and the per-chunk cache under ``<output>/.cache/queries/``.
The chunks fan out as one Prefect task per batch, run by the subflow's task runner: threads on one
machine, or a Dask cluster (`corpus.generate.dask_address`) for corpora that outgrow it.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pandas as pd
from prefect import flow, task, unmapped
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from embedforge import generation
from embedforge.config.corpus import GenerateConfig
from embedforge.data_reports import CorpusReport, GenerationReport
from embedforge.llm import ChatClient, ensure_limits
from embedforge.logs import run_logger
from embedforge.stage_progress import StageProgress, quiet_batches

METHODS = {"crop": generation.crop_pairs, "inverse_cloze": generation.inverse_cloze_pairs}


def _queries(config: GenerateConfig, chunk: dict, client: ChatClient | None) -> dict:
    """A chunk's cache entry: its pairs, and the tokens the endpoint counted for them."""
    if client is None:
        return {"pairs": METHODS[config.method](chunk["text"], config, chunk["digest"]), "usage": [0, 0]}
    prompt = generation.prompt_for(config.llm, chunk["text"], chunk["title"], config.queries_per_chunk)
    reply = client.complete(prompt)
    queries = generation.parse_queries(reply.text, config.queries_per_chunk)
    return {
        "pairs": [(query, chunk["text"]) for query in queries],
        "usage": [reply.prompt_tokens, reply.completion_tokens],
    }


@task(name="generate-queries")
def generate_batch(config: GenerateConfig, chunks: list[dict], cache_dir: str) -> dict:
    """One batch of chunks: cached ones read back, the rest generated (holding one endpoint slot) and cached."""
    cache, client = generation.QueryCache(Path(cache_dir)), ChatClient(config.llm) if config.llm else None
    keys = {chunk["chunk_id"]: generation.cache_key(chunk["digest"], config) for chunk in chunks}
    entries = {chunk_id: cache.get(key) for chunk_id, key in keys.items()}
    missing = [chunk for chunk in chunks if entries[chunk["chunk_id"]] is None]
    done = {"rows": [], "generated": len(missing), "cached": len(chunks) - len(missing)}
    with client.slot() if client and missing else nullcontext():
        for chunk in missing:
            entries[chunk["chunk_id"]] = _queries(config, chunk, client)
            cache.put(keys[chunk["chunk_id"]], entries[chunk["chunk_id"]])
    done["prompt_tokens"] = sum(entries[chunk["chunk_id"]]["usage"][0] for chunk in missing)
    done["completion_tokens"] = sum(entries[chunk["chunk_id"]]["usage"][1] for chunk in missing)
    for chunk in chunks:
        pairs = entries[chunk["chunk_id"]]["pairs"]
        done["rows"] += [
            {"anchor": q, "positive": p, "chunk_id": chunk["chunk_id"], "doc_id": chunk["doc_id"]} for q, p in pairs
        ]
    return done


def _runner(config: GenerateConfig):
    if config.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=config.workers)
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    # Requests wait on the network, not the CPU: one local worker process, its threads running the batches.
    return DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": config.workers, "processes": False})


def _runner_name() -> str:
    """The subflow's task runner as an operator knows it: threads, or the Dask cluster and its dashboard."""
    from prefect.context import FlowRunContext

    runner = FlowRunContext.get().task_runner
    if type(runner).__name__ != "DaskTaskRunner":
        return f"{getattr(runner, '_max_workers', None) or 'some'} threads"
    return f"the Dask cluster at {runner.client.scheduler.address} (dashboard {runner.client.dashboard_link})"


def _gather(futures) -> list[dict]:
    """Every batch's result as it lands, the progress following; the first failure raised once all ended."""
    progress = StageProgress("generate", len(futures), "batches")
    results, failures, position = [None] * len(futures), [], {id(future): i for i, future in enumerate(futures)}
    for done, future in enumerate(as_completed(futures), start=1):
        try:  # in batch order, whichever finishes first: the same chunks give the same pairs file
            results[position[id(future)]] = future.result()
        except Exception as exc:  # every batch ends before one failure is raised: none keeps sending behind it
            failures.append(exc)
        progress.advance(done)
    if failures:
        raise failures[0]
    return results


def _write(rows: list[dict], out_dir: str) -> str:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["anchor", "positive", "chunk_id", "doc_id"]).to_parquet(out / "generated.parquet")
    return str(out / "generated.parquet")


@flow(name="generate-pairs")
def _generate(config: GenerateConfig, corpus: CorpusReport, cache_dir: str, out_dir: str) -> GenerationReport:
    chunks = pd.read_parquet(corpus.path).to_dict("records")
    batches = [chunks[i : i + config.batch_size] for i in range(0, len(chunks), config.batch_size)]
    run_logger().info("%d chunks in %d batches, run by %s", len(chunks), len(batches), _runner_name())
    results = _gather(generate_batch.map(unmapped(config), batches, unmapped(cache_dir)))
    rows = [row for result in results for row in result["rows"]]
    sums = {key: sum(r[key] for r in results) for key in ("generated", "cached", "prompt_tokens", "completion_tokens")}
    report = GenerationReport(
        path=_write(rows, out_dir),
        method=config.method,
        documents=corpus.documents,
        pairs=len(rows),
        chunks=len(chunks),
        **sums,
    )
    run_logger().info(
        "Queries (%s) for %d chunks: %d made now, %d from the cache; %d pairs; tokens: %d prompt, %d completion",
        *(config.method, report.chunks, report.generated, report.cached, report.pairs),
        *(report.prompt_tokens, report.completion_tokens),
    )
    return report


def generate_pairs(config: GenerateConfig, corpus: CorpusReport, cache_dir: str, out_dir: str) -> GenerationReport:
    """The generate-pairs subflow on the task runner the section asks for, the endpoint's limits made first."""
    if config.llm:
        ensure_limits(config.llm)
    quiet_batches()
    return _generate.with_options(task_runner=_runner(config))(config, corpus, cache_dir, out_dir)
