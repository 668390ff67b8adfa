"""generate-pairs against the stand-in endpoint (tests/llm_server.py): the endpoint's limit holds across the runs
of several models, every chunk is asked once, and a failing batch starts no more."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from embedforge.config.corpus import GenerateConfig
from embedforge.data_reports import CorpusReport
from embedforge.tasks.generate import _run_batches

from llm_server import LocalLLM


def _corpus(folder: Path, count: int) -> CorpusReport:
    rows = [
        {
            "chunk_id": f"{folder.name}{i}.md#0",
            "doc_id": f"{folder.name}{i}.md",
            "title": f"Page {i}",
            "text": f"The {folder.name} keeper of chamber{i} writes ledger{i} entries every evening.",
            "digest": f"{folder.name}{i:06d}",
        }
        for i in range(count)
    ]
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "chunks.parquet")
    return CorpusReport(documents=count, chunks=count, path=str(folder / "chunks.parquet"))


@pytest.mark.slow
def test_two_models_on_one_endpoint_never_exceed_its_limit_and_ask_each_chunk_once(prefect_server, tmp_path):
    from prefect import flow

    from embedforge.tasks.generate import generate_pairs

    with LocalLLM() as llm:
        llm.state.latency = 0.3  # each run's requests take seconds: long enough for the two runs to overlap
        endpoint = {"base_url": llm.url, "model": "local-model", "max_in_flight": 6, "api_key_env": None}
        config = GenerateConfig(method="llm", llm=endpoint, batch_size=8, workers=3)

        def run(name: str):
            corpus, cache = _corpus(tmp_path / name, 60), str(tmp_path / "cache")
            return flow(name=f"model-{name}")(generate_pairs)(config, corpus, cache, str(tmp_path / name / "out"))

        with ThreadPoolExecutor(2) as pool:
            reports = list(pool.map(run, ["castle", "harbor"]))
        prompts = [request["body"]["messages"][0]["content"] for request in llm.state.completions()]
    assert llm.state.most_in_flight <= 6
    assert len(prompts) == len(set(prompts)) == 120
    assert [(report.generated, report.pairs) for report in reports] == [(60, 60), (60, 60)]


def test_batches_run_at_most_so_many_at_once_and_a_failure_starts_no_more():
    running, most, started, lock = 0, 0, [], threading.Lock()

    def batch(number: int) -> dict:
        nonlocal running, most
        with lock:
            running, started[:] = running + 1, started + [number]
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        if number == 2:
            raise RuntimeError("batch 2 failed")
        return {f"chunk{number}": {}}

    seen = []
    with ThreadPoolExecutor(8) as pool, pytest.raises(RuntimeError, match="batch 2 failed"):
        _run_batches(list(range(8)), 3, lambda number: pool.submit(batch, number), seen.append)
    assert most <= 3 and 2 in started and len(started) < 8  # batches after the failure were never started
    assert running == 0  # those running when it failed had ended before it was raised
    assert seen == sorted(seen) and seen[-1] >= 2  # the progress counts the chunks of the batches that ended
