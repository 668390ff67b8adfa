"""The corpus section: documents instead of pairs. They are cut into chunks, and training pairs are made from them.

A recipe with `corpus:` names no `ingest.path`: the pairs this section makes are the training data.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from embedforge.config.section import Section

# A prompt for retrieval queries that a user of the documents would type, in the documents' own language.
DEFAULT_PROMPT = (
    "Here is a passage from a document collection.\n\n"
    "<passage>\n{title}{text}\n</passage>\n\n"
    "Write {n} different search queries that a person would type to find this passage, in the passage's "
    "own language. Each must be answerable from the passage alone and must not copy a sentence from it. "
    "Answer with the queries only, one per line, without numbering."
)


PLACEHOLDERS = ("text", "title", "n")


def fill_prompt(prompt: str, **values: object) -> str:
    """The prompt with {text}, {title} and {n} filled in, and nothing else evaluated.

    str.format would follow `{text.__class__}` or `{text[0]}` into the objects it is given; here a placeholder is
    a name and only that, `{{` and `}}` being literal braces as in str.format.
    """
    import string

    parts = []
    for literal, name, spec, conversion in string.Formatter().parse(prompt):
        parts.append(literal)
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"the prompt names {shown}, which is no placeholder; use {{text}}, {{title}} and {{n}}")
        parts.append(str(values[name]))
    return "".join(parts)


def _placeholders_known(prompt: str) -> str:
    try:
        fill_prompt(prompt, text="", title="", n=1)
    except ValueError as exc:
        message = str(exc)
        raise ValueError(
            message if message.startswith("the prompt") else f"the prompt is not a template ({message})"
        ) from None
    if "{text}" not in prompt:
        raise ValueError("the prompt never shows the chunk: put {text} in it")
    return prompt


class LLMConfig(Section):
    """An OpenAI-compatible chat-completions endpoint: vLLM, Ollama, llama.cpp's server, TGI or a hosted API."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="The API root, e.g. http://localhost:8000/v1 (POST {base_url}/chat/completions).")
    model: str = Field(description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="Environment variable holding the key (none needed for most local servers)."
    )
    api_key_secret: str | None = Field(None, description="Name of a Prefect Secret block holding the key instead.")
    prompt: str = Field(
        DEFAULT_PROMPT, description="Prompt template: {text} the chunk, {title} its title line, {n} queries wanted."
    )
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    max_tokens: int = Field(256, gt=0, description="Most tokens a reply may have.")
    timeout_seconds: float = Field(120.0, gt=0, description="One request's time limit.")
    retries: int = Field(5, ge=0, description="Retries of a request answered 429 or 5xx, or timed out.")
    retry_delay_seconds: float = Field(2.0, ge=0, description="First retry delay (doubles); Retry-After wins.")
    max_in_flight: int = Field(
        4, ge=1, description="Requests in flight at once, shared by every run that uses this endpoint."
    )
    requests_per_minute: float | None = Field(None, gt=0, description="Also limit requests per minute (shared).")

    @field_validator("prompt")
    @classmethod
    def _a_template(cls, prompt: str) -> str:
        return _placeholders_known(prompt)


class GenerateConfig(Section):
    """How training pairs are made from the chunks."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["llm", "lead", "crop", "inverse_cloze"] = Field(
        "inverse_cloze",
        description="llm: queries an LLM writes; lead: a chunk's first sentence as the query for the rest of it "
        "(one pair per chunk); crop: Contriever's independent cropping; inverse_cloze: a sentence as the query for "
        "the rest of its chunk. All but llm need no endpoint.",
    )
    queries_per_chunk: int = Field(1, ge=1, description="Pairs made per chunk.")
    batch_size: int = Field(
        1024, ge=1, description="Most chunks per Prefect task run; a batch's requests are in flight together."
    )
    llm: LLMConfig | None = Field(None, description="The endpoint, for method: llm.")
    seed: int = Field(13, ge=0, description="Seed of crop and inverse_cloze (lead draws nothing).")
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Who runs the batches: threads of this process, or a Dask cluster (pip: prefect-dask)."
    )
    # One: a batch already has all its requests in flight, and threads of one process share one interpreter
    # lock (two or four ran slower in bench/generation.py). More pays on a Dask cluster of several machines.
    workers: int = Field(
        1, ge=1, description="Batches at once (threads, or Dask workers); each has a share of the endpoint's slots."
    )
    dask_address: str | None = Field(
        None, description="A running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a local cluster)."
    )

    @model_validator(mode="after")
    def _an_endpoint_for_llm(self) -> GenerateConfig:
        if self.method == "llm" and self.llm is None:
            raise ValueError("llm: method llm needs an endpoint (llm.base_url and llm.model)")
        if self.method != "llm" and self.llm is not None:
            raise ValueError(f"llm: method {self.method} uses no endpoint; remove llm, or set method: llm")
        if self.method == "lead" and self.queries_per_chunk > 1:
            raise ValueError(
                f"queries_per_chunk: lead makes one pair per chunk (its first sentence), not {self.queries_per_chunk}; "
                "leave queries_per_chunk out, or use inverse_cloze for several"
            )
        if self.dask_address and self.task_runner != "dask":
            raise ValueError("dask_address: set task_runner: dask to run the batches on that cluster")
        return self


class FilterConfig(Section):
    """Which generated pairs are kept."""

    model_config = ConfigDict(extra="forbid")

    round_trip_k: int | None = Field(
        10,
        ge=1,
        description="Keep a query only when the judge (round_trip_model) ranks its own chunk within the top k of "
        "the corpus (Promptagator/InPars consistency); null keeps every query.",
    )
    round_trip_model: Literal["trained", "base"] = Field(
        "trained",
        description="The round trip's judge: 'trained', two models trained from the base for round_trip_steps steps "
        "on half the generated pairs each, each judging the other half (Promptagator's filter, out of fold: it "
        "holds when the base model does not know the documents' domain or language); 'base', the base model as it "
        "is (cheaper; drops most pairs of a domain the base does not know).",
    )
    round_trip_steps: int = Field(
        100,
        ge=1,
        description="Training steps of each 'trained' judge (at most what the full run's epochs take on its half).",
    )
    dedupe: bool = Field(True, description="Drop exact duplicate queries (after case and space folding).")
    near_duplicate: float | None = Field(
        0.9, gt=0, le=1, description="Drop a query whose word-trigram overlap with a kept one is at least this."
    )
    min_query_chars: int = Field(8, ge=1, description="Shorter queries are dropped.")
    max_query_chars: int = Field(400, ge=1, description="Longer queries are dropped.")


class CorpusConfig(Section):
    """Documents, cut into chunks by the base model's own tokenizer."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="A file, folder or glob of .txt, .md, .html, .jsonl or .parquet documents (.pdf with "
        "pip install 'embedforge[pdf]')."
    )
    text_column: str = Field("text", description="The text column of .jsonl/.parquet documents.")
    id_column: str | None = Field("id", description="Their id column, when present (default: file and row).")
    title_column: str | None = Field("title", description="Their title column, when present.")
    chunk_tokens: int = Field(256, ge=16, description="Most tokens per chunk, counted by the base model's tokenizer.")
    overlap: int = Field(32, ge=0, description="Tokens a chunk repeats from the end of the one before it.")
    min_chunk_tokens: int = Field(24, ge=1, description="Shorter chunks (a lone heading, a footer) are dropped.")
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    rounds: int = Field(
        1,
        ge=1,
        le=5,
        description="Training rounds. From the second on, the model kept so far re-judges the training pairs (round "
        "trip, filter.round_trip_k) and re-mines them when mine is set, and the base model trains again on what it "
        "keeps; a round is kept only when better on the eval split beyond the noise, and the first that is not ends "
        "them.",
    )

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> CorpusConfig:
        if self.overlap >= self.chunk_tokens:
            raise ValueError(f"overlap: {self.overlap} must be below chunk_tokens ({self.chunk_tokens})")
        if self.min_chunk_tokens > self.chunk_tokens:
            raise ValueError(
                f"min_chunk_tokens: {self.min_chunk_tokens} is above chunk_tokens ({self.chunk_tokens}): every chunk "
                "would be dropped"
            )
        if self.rounds > 1 and self.filter.round_trip_k is None:
            raise ValueError(
                f"rounds: {self.rounds} rounds re-judge the pairs by round trip, and filter.round_trip_k is null; "
                "set it (20 is the default)"
            )
        if self.filter.min_query_chars >= self.filter.max_query_chars:
            raise ValueError("filter.min_query_chars: must be below filter.max_query_chars")
        return self


# Where the corpus stages' pairs go in the ingest section of a corpus recipe: the run puts the real file there.
CORPUS_PAIRS = "<the pairs made from corpus.path>"


def with_corpus_pairs(data: Any) -> Any:
    """A corpus recipe's ingest reads the pairs the corpus stages make; split by document unless told.

    Sections of the wrong type are left as they are, for the field validation to name.
    """
    ingest, split = (data.get(key) or {} if isinstance(data, dict) else None for key in ("ingest", "split"))
    if not isinstance(data, dict) or not data.get("corpus") or not isinstance(ingest, dict):
        return data
    if ingest.get("kind", "retrieval") != "retrieval":
        raise ValueError("ingest.kind: a corpus makes retrieval pairs (anchor, positive); leave kind out")
    given = [key for key in ("path", "path_env", "dataset") if ingest.get(key) not in (None, CORPUS_PAIRS)]
    if given:
        raise ValueError(f"ingest.{given[0]}: the corpus section makes the training pairs; give one of the two")
    keep = ingest.get("keep", [])
    ingest = {**ingest, "path": CORPUS_PAIRS} | (
        {"keep": list(dict.fromkeys([*keep, "doc_id"]))} if isinstance(keep, list) else {}
    )
    if isinstance(split, dict):
        split = {"group_by": "doc_id", **split}  # the test split measures documents the model never saw
    return {**data, "ingest": ingest, "split": split}
