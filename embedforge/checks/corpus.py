"""Pre-run checks of the corpus section: the documents are there, the tokenizer loads, the extras are installed."""

from __future__ import annotations

import importlib.util

import httpx

from embedforge.chunking import load_tokenizer
from embedforge.documents import document_files
from embedforge.errors import EmbedforgeError
from embedforge.llm import api_key
from embedforge.recipe import Recipe

EXTRAS = {"prefect_dask": "dask", "pypdf": "pdf"}


def _missing(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"needs {module.replace('_', '-')}: pip install 'embedforge[{EXTRAS[module]}]'"
    return None


def check_corpus(recipe: Recipe) -> list[tuple[str, str]]:
    """(field, problem) for documents that cannot be read, a tokenizer that does not load, an extra not installed."""
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
    if corpus.generate.task_runner == "dask" and (problem := _missing("prefect_dask")):
        problems.append(("corpus.generate.task_runner", f"dask {problem}"))
    if corpus.generate.llm and corpus.generate.llm.api_key_secret:
        try:
            api_key(corpus.generate.llm)
        except EmbedforgeError as exc:
            problems.append(("corpus.generate.llm.api_key_secret", str(exc).split(": ", 1)[1]))
    try:
        load_tokenizer(recipe.train.base_model, recipe.train.base_model_revision)
    except EmbedforgeError:
        pass  # check_training names a base model that cannot be had
    return problems


def check_endpoint(recipe: Recipe) -> list[tuple[str, str]]:
    """The LLM endpoint answers, accepts the key and serves the model: asked once, GET {base_url}/models."""
    llm = recipe.corpus.generate.llm if recipe.corpus else None
    if llm is None:
        return []
    try:
        key = api_key(llm)
    except EmbedforgeError:
        return []  # check_corpus names the missing Secret block
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{llm.base_url.rstrip('/')}/models", headers=headers, timeout=10)
    except httpx.TransportError as exc:
        return [("corpus.generate.llm.base_url", f"{llm.base_url} cannot be reached ({type(exc).__name__}: {exc})")]
    if response.status_code in (401, 403):
        where = llm.api_key_secret or llm.api_key_env
        return [("corpus.generate.llm", f"{llm.base_url} refused the key (HTTP {response.status_code}); check {where}")]
    if response.status_code >= 300:
        return []  # some servers have no model list; the first request will tell
    served = [model.get("id") for model in response.json().get("data", [])]
    if served and llm.model not in served:
        return [("corpus.generate.llm.model", f"{llm.base_url} does not serve {llm.model!r}; it serves {served}")]
    return []
