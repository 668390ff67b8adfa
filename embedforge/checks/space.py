"""Pre-run checks of disk space: the run directory (and a local release target) hold what the run writes."""

from __future__ import annotations

import shutil
from pathlib import Path

from embedforge.config.train import TrainConfig
from embedforge.errors import EmbedforgeError
from embedforge.models import weights_size
from embedforge.recipe import Recipe


def space_needed(config: TrainConfig) -> int | None:
    """Bytes a run directory needs, estimated from the base model: the model, and each kept checkpoint's weights
    with the optimizer's two moments (3x); None when the model's size is not known."""
    size = weights_size(config.base_model)
    if not size:
        return None
    saves = config.args.get("save_strategy", "steps") != "no"
    kept = (config.args.get("save_total_limit") or 3) if saves else 0
    return size * (1 + 3 * kept)


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"


def _wanted(recipe: Recipe, output_dir: Path) -> dict[str, tuple[Path, int]]:
    """{field: (folder, bytes)} the run will write: the run directory, and the release when it is local."""
    try:
        needed = space_needed(recipe.train)
    except EmbedforgeError:
        return {}  # check_training names a base model that does not resolve
    if not needed:
        return {}
    wants = {"--output-dir": (output_dir, needed)}
    if recipe.push.active and recipe.push.local_dir:
        wants["push.local_dir"] = (Path(recipe.push.local_dir), weights_size(recipe.train.base_model) or 0)
    return wants


def check_space(recipe: Recipe, output_dir: Path) -> list[tuple[str, str]]:
    """The run directory's disk (and the local release target's, when it is another) holds what the run writes.

    Two folders on one disk add up: the sum is what must fit.
    """
    devices: dict[int, int] = {}
    problems = []
    for field, (folder, size) in _wanted(recipe, output_dir).items():
        existing = next(p for p in [folder.resolve(), *folder.resolve().parents] if p.exists())
        device = existing.stat().st_dev
        devices[device] = devices.get(device, 0) + size
        free = shutil.disk_usage(existing).free
        if devices[device] > free:
            message = f"{existing} has {_gb(free)} free; this run writes about {_gb(devices[device])} "
            problems.append((field, message + "(the model, its checkpoints with optimizer state, the release)"))
    return problems
