"""Split: seeded, group-aware train/eval/test splits of the ingested data.

Side effect: writes ``<dir>/train.parquet`` and, per evaluation dataset,
``<dir>/<name>/eval.parquet`` and ``<dir>/<name>/test.parquet``.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import EmbedforgeError
from tasks.ingest import IngestConfig

# A passage (or sentence pair's first side) that appears twice must stay in one split,
# or the test numbers measure memorisation.
DEFAULT_GROUP = {"retrieval": "positive", "similarity": "sentence1", "classification": "sentence1"}


class SplitConfig(BaseModel):
    """How the data is divided; the test split only ever feeds the final numbers."""

    model_config = ConfigDict(extra="forbid")

    eval_size: float = Field(0.1, ge=0.0, lt=1.0, description="Share of groups for the eval split (used during training, e.g. load_best_model_at_end).")
    test_size: float = Field(0.1, gt=0.0, lt=1.0, description="Share of groups held out for the final numbers.")
    seed: int = Field(42, description="Seed of the split; the same seed and data give the same split.")
    group_by: str | None = Field(None, description="Column whose equal values never cross splits; default: the passage (positive) or sentence1.")
    eval_sources: list[IngestConfig] = Field(default_factory=list, description="Separate evaluation datasets, each an ingest section (e.g. STS-B beside SNLI training data); each is split into eval/test halves by eval_size:test_size, and the training data is then used whole for training.")

    @model_validator(mode="after")
    def _sizes(self) -> "SplitConfig":
        if not self.eval_sources and self.eval_size + self.test_size >= 1.0:
            raise ValueError("eval_size + test_size must leave rows for training")
        return self


def _group_split(data: datasets.Dataset, shares: dict[str, float], group: str, seed: int) -> dict[str, datasets.Dataset]:
    """Split by unique group value with datasets' own seeded train_test_split, then map rows to their group's split."""
    if group not in data.column_names:
        raise EmbedforgeError(f"split: group column {group!r} is not in the data ({data.column_names}); keep it with ingest.keep")
    groups = datasets.Dataset.from_dict({"group": sorted(set(data[group]))})
    held_out = sum(v for k, v in shares.items() if k != "train")
    if len(groups) < 3:
        raise EmbedforgeError(f"split: only {len(groups)} distinct {group!r} values; cannot make train/eval/test splits")
    assignment: dict[str, str] = {}
    parts = groups.train_test_split(test_size=held_out, seed=seed) if shares.get("train") else {"train": groups.select([]), "test": groups}
    for value in parts["train"]["group"]:
        assignment[value] = "train"
    rest = parts["test"]
    if shares.get("eval"):
        rest = rest.train_test_split(test_size=shares["test"] / held_out, seed=seed)
        for value in rest["train"]["group"]:
            assignment[value] = "eval"
        rest = rest["test"]
    for value in rest["group"]:
        assignment[value] = "test"
    names = [assignment[value] for value in data[group]]
    return {name: data.select([i for i, n in enumerate(names) if n == name]) for name in shares if shares[name]}


def _write(parts: dict[str, datasets.Dataset], out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.to_parquet(str(out / f"{name}.parquet"))
    return {name: len(part) for name, part in parts.items()}


@task(name="split-dataset", cache_policy=INPUTS, persist_result=True)
def split_dataset(config: SplitConfig, train: dict, evaluation: list[dict], out_dir: str) -> dict:
    """Return {"train": path, "evaluation": {name: {"eval": path, "test": path, "kind": kind}}}."""
    logger = get_run_logger()
    out = Path(out_dir)
    data = datasets.Dataset.from_parquet(train["path"])
    group = config.group_by or DEFAULT_GROUP[train["kind"]]
    if evaluation:
        train_part = data
        shares = {"eval": config.eval_size, "test": config.test_size}
        held_out = [(report, _group_split(datasets.Dataset.from_parquet(report["path"]), shares, DEFAULT_GROUP[report["kind"]], config.seed)) for report in evaluation]
    else:
        shares = {"train": 1 - config.eval_size - config.test_size, "eval": config.eval_size, "test": config.test_size}
        parts = _group_split(data, shares, group, config.seed)
        train_part = parts.pop("train")
        held_out = [(train, parts)]
    result: dict = {"train": str(out / "train.parquet"), "evaluation": {}}
    _write({"train": train_part}, out)
    for report, parts in held_out:
        folder = out / (report["name"] or "data")
        counts = _write(parts, folder)
        logger.info("Split %s by %r (seed %d): train %d, %s", report["name"] or "data", group, config.seed, len(train_part), counts)
        result["evaluation"][report["name"]] = {"kind": report["kind"], **{name: str(folder / f"{name}.parquet") for name in parts}}
    return result
