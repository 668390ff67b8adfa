"""LoRA adapters for large bases (peft): train a few million weights instead of all of them.

The release holds the adapter alone (a few MB, loaded onto its base by sentence-transformers), or
the adapter merged into the base weights when the recipe asks, for readers without peft.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from embedforge.config.train import AdapterConfig

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def adapter_problem() -> str | None:
    """Why adapters cannot train here (peft missing, or older than this transformers needs), or None."""
    import importlib.metadata

    from packaging.version import Version
    from transformers.integrations.peft import MIN_PEFT_VERSION

    try:
        installed = importlib.metadata.version("peft")
    except importlib.metadata.PackageNotFoundError:
        return "adapters need the peft package: pip install 'embedforge[adapters]'"
    if Version(installed) < Version(MIN_PEFT_VERSION):
        return (
            f"transformers {importlib.metadata.version('transformers')} needs peft >= {MIN_PEFT_VERSION}, "
            f"and peft {installed} is installed: upgrade peft, or use transformers < 5.24 with it"
        )
    return None


def add_adapter(model, config: AdapterConfig) -> None:
    """Freeze the base and add a trainable LoRA adapter to the model's transformer."""
    from peft import LoraConfig, TaskType

    model.add_adapter(
        LoraConfig(
            task_type=TaskType.FEATURE_EXTRACTION,
            r=config.r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
        )
    )


def merge_adapter(model_dir: str) -> None:
    """Replace the saved adapter with full weights: base + adapter, merged by peft."""
    from peft import PeftModel
    from transformers import AutoModel

    from embedforge.models import load_model

    folder = Path(model_dir)
    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = load_model(model_dir)
    model[0].model = PeftModel.from_pretrained(AutoModel.from_pretrained(base), model_dir).merge_and_unload()
    for name in ADAPTER_FILES:
        (folder / name).unlink(missing_ok=True)
    staging = folder.with_name(folder.name + ".merged")
    model.save(str(staging))
    shutil.copytree(staging, folder, dirs_exist_ok=True)
    shutil.rmtree(staging)


def with_full_weights(model_dir: str, scratch: Path) -> str:
    """The model's folder with full weights: a LoRA adapter merged into its base in a copy at `scratch`.

    Stages that need plain weights (merging, exporting) read the copy; the adapter the run trained stays.
    """
    folder = Path(model_dir)
    if not (folder / "adapter_config.json").exists():
        return model_dir
    shutil.copytree(folder, scratch, dirs_exist_ok=True)
    merge_adapter(str(scratch))
    return str(scratch)


def missing_targets(targets: list[str] | str, modules: list[str]) -> list[str]:
    """Target names (or a regex) that match none of the model's modules, as peft matches them."""
    import re

    if isinstance(targets, str):
        return [] if any(re.fullmatch(targets, name) for name in modules) else [targets]
    return [t for t in targets if not any(name == t or name.endswith(f".{t}") for name in modules)]
