"""Chunk: the corpus's documents, cut into chunks by the base model's own tokenizer.

Side effect: writes ``<dir>/chunks.parquet`` (chunk id, document id, title, text, content digest).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task

from embedforge.chunking import Chunker, chunk_rows, load_tokenizer
from embedforge.config.corpus import CorpusConfig
from embedforge.config.train import TrainConfig
from embedforge.data_reports import CorpusReport
from embedforge.documents import read_documents
from embedforge.logs import run_logger
from embedforge.stage_progress import StageProgress


@task(name="chunk-corpus")
def chunk_corpus(config: CorpusConfig, train: TrainConfig, out_dir: str) -> CorpusReport:
    """Read every document and cut it into chunks of at most `chunk_tokens` tokens; return where they are."""
    documents = read_documents(config)
    chunker = Chunker(load_tokenizer(train.base_model, train.base_model_revision), config)
    rows = chunk_rows(documents, chunker, StageProgress("chunk", len(documents), "documents"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "chunks.parquet"
    # A chunk repeated word for word (a shared footer, a copied page) is asked about and trained on once.
    chunks = pd.DataFrame(rows).drop_duplicates("digest")
    chunks.to_parquet(path, index=False)
    report = CorpusReport(documents=len(documents), chunks=len(chunks), path=str(path))
    run_logger().info(
        "Cut %d documents into %d chunks of at most %d tokens", report.documents, report.chunks, config.chunk_tokens
    )
    return report
