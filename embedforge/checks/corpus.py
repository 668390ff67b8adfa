"""Pre-run checks of the corpus section: the documents are there, the tokenizer loads, the extras are installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx

from embedforge.checks.content import check_documents
from embedforge.chunking import tokenizer_folder
from embedforge.documents import document_files
from embedforge.errors import EmbedforgeError
from embedforge.llm import ChatClient, api_key, unset_key
from embedforge.localfiles import named_root
from embedforge.models import resolve_model_ref, sequence_length
from embedforge.recipe import Recipe

EXTRAS = {"prefect_dask": "dask", "pypdf": "pdf"}


def _missing(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"needs {module.replace('_', '-')}: pip install 'embedforge[{EXTRAS[module]}]'"
    return None


def check_corpus(recipe: Recipe) -> list[tuple[str, str]]:
    """(field, problem) for documents that cannot be read, a base model without a tokenizer, an extra not installed."""
    corpus = recipe.corpus
    if corpus is None:
        return []
    problems = []
    try:
        files = document_files(corpus.path)
    except EmbedforgeError as exc:
        problems.append(("corpus.path", str(exc).removeprefix("corpus.path: ")))
    else:
        if any(f.suffix.lower() == ".pdf" for f in files) and (problem := _missing("pypdf")):
            problems.append(("corpus.path", f"{corpus.path} holds PDF files; reading them {problem}"))
        else:
            problems += check_documents(recipe)
    if corpus.generate.task_runner == "dask" and (problem := _missing("prefect_dask")):
        problems.append(("corpus.generate.task_runner", f"dask {problem}"))
    if corpus.generate.llm and corpus.generate.llm.api_key_secret:
        try:
            api_key(corpus.generate.llm)
        except EmbedforgeError as exc:
            problems.append(("corpus.generate.llm.api_key_secret", str(exc).split(": ", 1)[1]))
    problems += _check_tokenizer(recipe.train.base_model, recipe.train.base_model_revision)
    return problems + _check_length(recipe) + _check_release_outside(recipe)


def _check_release_outside(recipe: Recipe) -> list[tuple[str, str]]:
    """Releases written among the documents would be read as documents by the next run: cards trained on cards."""
    local_dir = recipe.push.local_dir
    named = Path(recipe.corpus.path).expanduser()
    if not local_dir or named.is_file():  # one documents file: nothing beside it is read
        return []
    root = named_root(recipe.corpus.path)  # the folder itself, or a glob's folder
    if Path(local_dir).expanduser().resolve().is_relative_to(root.resolve()):
        return [
            (
                "push.local_dir",
                f"{local_dir} is inside corpus.path ({recipe.corpus.path}): the next run would "
                "read the release's card as a document; publish outside the documents",
            )
        ]
    return []


def _check_length(recipe: Recipe) -> list[tuple[str, str]]:
    """Chunks longer than the model reads would be cut silently, in training and in every search."""
    train = recipe.train
    try:
        length = train.max_seq_length or sequence_length(train.base_model, train.base_model_revision)
    except EmbedforgeError:
        return []  # check_training names a base model that cannot be read
    if length and recipe.corpus.chunk_tokens > length:
        where = "train.max_seq_length" if train.max_seq_length else "the base model's max_seq_length"
        return [
            (
                "corpus.chunk_tokens",
                f"{recipe.corpus.chunk_tokens} tokens is more than the model reads ({length}, {where}): every "
                f"longer chunk would be cut; set chunk_tokens to at most {length}",
            )
        ]
    return []


def _check_tokenizer(ref: str, revision: str | None) -> list[tuple[str, str]]:
    """A local base model whose folder has no tokenizer: the chunks are sized in its tokens. Nothing is loaded."""
    try:
        local = Path(resolve_model_ref(ref)).is_dir()
    except EmbedforgeError:
        return []  # check_training names a base model that cannot be had
    if not local:
        return []  # a Hub model's tokenizer is fetched with it
    try:
        tokenizer_folder(ref, revision)
    except EmbedforgeError as exc:
        return [("train.base_model", str(exc))]
    return []


def check_endpoint(recipe: Recipe) -> list[tuple[str, str]]:
    """The LLM endpoint answers, accepts the key and serves the model: asked once, GET {base_url}/models."""
    llm = recipe.corpus.generate.llm if recipe.corpus else None
    if llm is None:
        return []
    try:
        client = ChatClient(llm)  # the run's own client: its base URL and key
    except EmbedforgeError:
        return []  # check_corpus names the missing Secret block
    try:
        response = httpx.get(f"{llm.base_url.rstrip('/')}/models", headers=client.headers, timeout=10)
    except httpx.TransportError as exc:
        return [("corpus.generate.llm.base_url", f"{llm.base_url} cannot be reached ({type(exc).__name__}: {exc})")]
    if response.status_code in (401, 403) and not client.headers:
        return [
            (
                "corpus.generate.llm.api_key_env",
                f"{llm.base_url} wants a key (HTTP {response.status_code}), and none was sent: {unset_key(llm)}",
            )
        ]
    if response.status_code in (401, 403):
        where = llm.api_key_secret or llm.api_key_env
        return [("corpus.generate.llm", f"{llm.base_url} refused the key (HTTP {response.status_code}); check {where}")]
    if response.status_code >= 300:
        return []  # some servers have no model list; the first request will tell
    served = [model.get("id") for model in response.json().get("data", [])]
    if served and llm.model not in served:
        return [("corpus.generate.llm.model", f"{llm.base_url} does not serve {llm.model!r}; it serves {served}")]
    return []
