"""Generate: a query (or several) for every chunk, by an LLM or without one; the pairs are the training data.

Side effect: writes ``<dir>/generated.parquet`` and the per-chunk cache under ``<output>/.cache/queries/``.
The chunks not in the cache fan out as Prefect task runs of up to `batch_size` chunks, run by the subflow's
task runner: threads on one machine, or a Dask cluster (`corpus.generate.dask_address`) for corpora that
outgrow it. With an endpoint, the subflow takes the endpoint's slots once, in bulk (a slot per request would
cost two Prefect API calls, more than a fast endpoint takes to answer), and the batches running share them:
each has its share of requests in flight, and no more batches run than there are shares.
"""

from __future__ import annotations

import asyncio
import math
import queue
from functools import partial
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from embedforge import generation
from embedforge.config.corpus import GenerateConfig
from embedforge.data_reports import CorpusReport, GenerationReport
from embedforge.llm import ChatClient, endpoint_slots, ensure_limits
from embedforge.logs import run_logger
from embedforge.stage_progress import StageProgress, add_to_count, quiet_batches, read_count, shared_count

METHODS = {
    "lead": generation.lead_pairs,
    "crop": generation.crop_pairs,
    "inverse_cloze": generation.inverse_cloze_pairs,
}


async def _ask(client: ChatClient, config: GenerateConfig, chunk: dict) -> dict:
    """A chunk's cache entry from the endpoint: its pairs, and the tokens the endpoint counted for them."""
    prompt = generation.prompt_for(config.llm, chunk["text"], chunk["title"], config.queries_per_chunk)
    reply = await client.complete(prompt)
    queries = generation.parse_queries(reply.text, config.queries_per_chunk)
    return {
        "pairs": [(query, chunk["text"]) for query in queries],
        "usage": [reply.prompt_tokens, reply.completion_tokens],
    }


async def _ask_all(config: GenerateConfig, chunks: list[dict], in_flight: int, save) -> None:
    """Every chunk asked for, `in_flight` requests at once, each answer saved as it lands.

    The first failure stops new requests; it is raised once those in flight have ended (their answers kept).
    """
    client, failures, room = ChatClient(config.llm), [], asyncio.Semaphore(in_flight)

    async def one(chunk: dict) -> None:
        async with room:
            if failures:
                return
            try:
                save(chunk, await _ask(client, config, chunk))
            except Exception as exc:  # raised below, once the others in flight have ended
                failures.append(exc)

    async with client.session(in_flight):
        await asyncio.gather(*(one(chunk) for chunk in chunks))
    if failures:
        raise failures[0]


@task(name="generate-queries", cache_policy=NO_CACHE)  # the per-chunk cache is what a rerun reuses
async def generate_batch(
    config: GenerateConfig, chunks: list[dict], cache_dir: str, in_flight: int, count: str
) -> dict[str, dict]:
    """Queries for chunks the cache lacks, each cached as it lands; with an endpoint, `in_flight` at once."""
    cache, made = generation.QueryCache(Path(cache_dir)), {}

    def save(chunk: dict, entry: dict) -> None:
        made[chunk["chunk_id"]] = entry
        cache.put(generation.cache_key(chunk["digest"], config), entry)
        add_to_count(count, 1)

    if config.llm:
        await _ask_all(config, chunks, in_flight, save)
    else:
        for chunk in chunks:
            save(chunk, {"pairs": METHODS[config.method](chunk["text"], config, chunk["digest"]), "usage": [0, 0]})
    return made


def _cached(chunks: list[dict], config: GenerateConfig, cache_dir: str) -> dict[str, dict]:
    cache = generation.QueryCache(Path(cache_dir))
    entries = {chunk["chunk_id"]: cache.get(generation.cache_key(chunk["digest"], config)) for chunk in chunks}
    return {chunk_id: entry for chunk_id, entry in entries.items() if entry is not None}


def _batches(chunks: list[dict], config: GenerateConfig, at_once: int) -> list[list[dict]]:
    """Batches of at most batch_size, and at least one per batch running at once: every share in use."""
    size = max(1, min(config.batch_size, math.ceil(len(chunks) / at_once)))
    return [chunks[i : i + size] for i in range(0, len(chunks), size)]


def _run_batches(batches: list[list[dict]], at_once: int, submit, progress) -> dict[str, dict]:
    """Batches run `at_once` at a time, the next started as one ends; `progress(chunks of ended batches)` at least
    once a second. The first failure starts no more; it is raised once those running have ended."""
    ended, waiting, running, made, failures = queue.Queue(), list(batches), 0, {}, []
    while waiting or running:
        while waiting and running < at_once:
            submit(waiting.pop(0)).add_done_callback(ended.put)
            running += 1
        try:
            future = ended.get(timeout=1)
        except queue.Empty:
            progress(len(made))
            continue
        running -= 1
        try:
            made |= future.result()
        except Exception as exc:  # every batch running ends before one failure is raised
            failures.append(exc)
            waiting = []
        progress(len(made))
    if failures:
        raise failures[0]
    return made


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
        return _counted(getattr(runner, "_max_workers", 1), "thread", "threads")
    return f"the Dask cluster at {runner.client.scheduler.address} (dashboard {runner.client.dashboard_link})"


def _counted(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _make(config: GenerateConfig, missing: list[dict], cache_dir: str, slots: int, total: int) -> dict[str, dict]:
    """The entries of the chunks the cache lacks, made by batches sharing the endpoint's slots (taken here, as many
    as there are requests up to all `slots`; at least one, even of a limit an operator set to 0 to pause it)."""
    with endpoint_slots(config.llm, max(1, min(slots, len(missing)))) as held:
        at_once = min(config.workers, held) if config.llm else config.workers
        batches, share = _batches(missing, config, at_once), held // at_once
        in_flight = f", {at_once * share} requests in flight" if config.llm else ""
        run_logger().info(
            "%d chunks, %d from the cache; the rest in %s%s, run by %s",
            *(total, total - len(missing), _counted(len(batches), "batch", "batches"), in_flight, _runner_name()),
        )
        submit = partial(generate_batch.submit, config, cache_dir=cache_dir, in_flight=share)
        return _run_with_progress(batches, at_once, submit, cached=total - len(missing))


def _run_with_progress(batches: list[list[dict]], at_once: int, submit, cached: int) -> dict[str, dict]:
    """The batches run, the stage's progress counting chunks: those from the cache, then each one made."""
    progress = StageProgress("generate", cached + sum(map(len, batches)), "chunks")
    with shared_count() as count:

        def advance(ended: int) -> None:  # a batch on a remote worker counts nothing here: it shows when it ends
            progress.advance(cached + max(read_count(count), ended))

        return _run_batches(batches, at_once, partial(submit, count=count), advance)


def _write(rows: list[dict], out_dir: str) -> str:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["anchor", "positive", "chunk_id", "doc_id"]).to_parquet(out / "generated.parquet")
    return str(out / "generated.parquet")


def _report(config: GenerateConfig, corpus: CorpusReport, chunks: list[dict], entries: dict, made: dict, out_dir):
    rows = [
        {"anchor": query, "positive": passage, "chunk_id": chunk["chunk_id"], "doc_id": chunk["doc_id"]}
        for chunk in chunks
        for query, passage in entries[chunk["chunk_id"]]["pairs"]
    ]
    return GenerationReport(
        path=_write(rows, out_dir),
        method=config.method,
        documents=corpus.documents,
        pairs=len(rows),
        chunks=len(chunks),
        generated=len(made),
        cached=len(chunks) - len(made),
        prompt_tokens=sum(entry["usage"][0] for entry in made.values()),
        completion_tokens=sum(entry["usage"][1] for entry in made.values()),
    )


@flow(name="generate-pairs")
def _generate(
    config: GenerateConfig, corpus: CorpusReport, cache_dir: str, out_dir: str, slots: int
) -> GenerationReport:
    chunks = pd.read_parquet(corpus.path).to_dict("records")
    entries = _cached(chunks, config, cache_dir)
    missing = [chunk for chunk in chunks if chunk["chunk_id"] not in entries]
    made = _make(config, missing, cache_dir, slots, len(chunks)) if missing else {}
    report = _report(config, corpus, chunks, entries | made, made, out_dir)
    run_logger().info(
        "Queries (%s) for %d chunks: %d made now, %d from the cache; %d pairs; tokens: %d prompt, %d completion",
        *(config.method, report.chunks, report.generated, report.cached, report.pairs),
        *(report.prompt_tokens, report.completion_tokens),
    )
    return report


def generate_pairs(config: GenerateConfig, corpus: CorpusReport, cache_dir: str, out_dir: str) -> GenerationReport:
    """The generate-pairs subflow on the task runner the section asks for, the endpoint's limits made first."""
    slots = ensure_limits(config.llm) if config.llm else 0
    quiet_batches()
    return _generate.with_options(task_runner=_runner(config))(config, corpus, cache_dir, out_dir, slots)
