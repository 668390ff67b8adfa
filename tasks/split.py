"""Split: seeded, group-aware train/eval/test splits of the ingested data.

Side effect: writes ``<dir>/train.parquet`` and, per evaluation dataset,
``<dir>/<name>/eval.parquet`` and ``<dir>/<name>/test.parquet``.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from prefect import task
from prefect.cache_policies import INPUTS
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import EmbedforgeError
from tasks.ingest import IngestConfig, IngestReport, Kind
from tasks.logs import run_logger
from tasks.mine import MiningReport

# A passage (or sentence pair's first side) that appears twice must stay in one split,
# or the test numbers measure memorisation.
DEFAULT_GROUP = {"retrieval": "positive", "similarity": "sentence1", "classification": "sentence1"}
# The two texts of a pair: a held-out pair whose either text was trained on measures memory, not generalisation.
PAIR_TEXTS = {"retrieval": ("anchor", "positive"), "similarity": ("sentence1", "sentence2")}
PAIR_TEXTS["classification"] = PAIR_TEXTS["similarity"]


class SplitConfig(BaseModel):
    """How the data is divided; the test split only ever feeds the final numbers."""

    model_config = ConfigDict(extra="forbid")

    eval_size: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of groups for the eval split (used during training, e.g. load_best_model_at_end).",
    )
    test_size: float = Field(0.1, gt=0.0, lt=1.0, description="Share of groups held out for the final numbers.")
    seed: int = Field(42, description="Seed of the split; the same seed and data give the same split.")
    group_by: str | None = Field(
        None,
        description="Column whose equal values never cross splits; default: the passage (positive) or sentence1.",
    )
    eval_sources: list[IngestConfig] = Field(
        default_factory=list,
        description="Separate evaluation datasets, each an ingest section (e.g. STS-B beside SNLI training data); "
        "each is split into eval/test halves by eval_size:test_size, and the training data is then used whole "
        "for training.",
    )
    max_overlap: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of eval or test pairs allowed to share a text with the training split; above it the run "
        "is refused. Allowed overlap is logged and stated in the card.",
    )
    test_file: str | None = Field(
        None,
        description="A test file of its own (file, folder or glob, read with ingest's columns), used whole as the "
        "test split; test_size is then not used.",
    )
    eval_file: str | None = Field(
        None,
        description="An eval file of its own, used whole as the eval split (read like test_file); eval_size is then "
        "not used.",
    )

    @model_validator(mode="after")
    def _sizes(self) -> SplitConfig:
        if (self.test_file or self.eval_file) and self.eval_sources:
            raise ValueError("test_file/eval_file: give these or eval_sources, not both")
        for part in ("test", "eval"):
            if getattr(self, f"{part}_file") and f"{part}_size" in self.model_fields_set:
                raise ValueError(
                    f"{part}_size: {part}_file is used whole as the {part} split, so {part}_size would be ignored; "
                    "give one of the two"
                )
        if not self.eval_sources and sum(self.shares().values()) >= 1.0:
            raise ValueError("eval_size + test_size must leave rows for training")
        return self

    def shares(self) -> dict[str, float]:
        """What is carved out of the training data: the parts that have no file of their own."""
        return {"eval": 0.0 if self.eval_file else self.eval_size, "test": 0.0 if self.test_file else self.test_size}

    def files(self, train: IngestConfig) -> dict[str, IngestConfig]:
        """The test and eval files as ingest sections: the training data's name, kind and columns, their own path."""
        files = {"test": self.test_file, "eval": self.eval_file}
        return {
            part: train.model_copy(update={"path": path, "path_env": None, "dataset": None, "limit": None})
            for part, path in files.items()
            if path
        }


class EvalSplit(BaseModel):
    """One evaluation dataset's held-out parts: eval (during training) and test (the final numbers)."""

    kind: Kind
    eval: str | None = None
    test: str | None = None
    overlap: dict[str, str] = Field(
        default_factory=dict, description="Per part, how many of its pairs share a text with training: '3 of 120'."
    )


class Splits(BaseModel):
    """What split hands on: the training rows and, per evaluation dataset (by evaluator name), its parts.

    After mining, ``train`` holds the pairs with their negatives and ``in_batch_only`` those without.
    """

    train: str
    in_batch_only: str | None = Field(None, description="Training pairs that train with in-batch negatives only.")
    mining: MiningReport | None = None
    train_name: str = Field(description="The training data's label, as the card names the dataset.")
    train_kind: Kind
    evaluation: dict[str, EvalSplit]

    def parts(self, part: str) -> dict[str, tuple[str, str]]:
        """{evaluator name: (kind, parquet path)} of every dataset that has this part ("eval" or "test")."""
        return {
            name: (entry.kind, getattr(entry, part)) for name, entry in self.evaluation.items() if getattr(entry, part)
        }


def _group_split(
    data: datasets.Dataset, shares: dict[str, float], group: str, seed: int
) -> dict[str, datasets.Dataset]:
    """Split by unique group value with datasets' own seeded train_test_split, then map rows to their group's split."""
    if group not in data.column_names:
        raise EmbedforgeError(
            f"split: group column {group!r} is not in the data ({data.column_names}); keep it with ingest.keep"
        )
    groups = datasets.Dataset.from_dict({"group": sorted(set(data[group]))})
    if len(groups) < 3:
        raise EmbedforgeError(
            f"split: only {len(groups)} distinct {group!r} values; cannot make train/eval/test splits"
        )
    assignment = _assign_groups(groups, shares, seed)
    names = [assignment[value] for value in data[group]]
    return {name: data.select([i for i, n in enumerate(names) if n == name]) for name in shares if shares[name]}


def _assign_groups(groups: datasets.Dataset, shares: dict[str, float], seed: int) -> dict[str, str]:
    """Group value -> "train", "eval" or "test": first train vs. held out, then the held out into eval vs. test."""
    held = {name: share for name, share in shares.items() if name != "train" and share}
    assignment: dict[str, str] = {}
    if shares.get("train"):
        parts = groups.train_test_split(test_size=sum(held.values()), seed=seed)
    else:
        parts = {"train": groups.select([]), "test": groups}
    assignment.update(dict.fromkeys(parts["train"]["group"], "train"))
    rest = parts["test"]
    if len(held) == 2:
        rest = rest.train_test_split(test_size=held["test"] / sum(held.values()), seed=seed)
        assignment.update(dict.fromkeys(rest["train"]["group"], "eval"))
        rest = rest["test"]
    assignment.update(dict.fromkeys(rest["group"], "test" if "test" in held else "eval"))
    return assignment


def _write(parts: dict[str, datasets.Dataset], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.to_parquet(str(out / f"{name}.parquet"))
    return {name: str(out / f"{name}.parquet") for name in parts}


def _held_out(config: SplitConfig, train: IngestReport, evaluation: list[IngestReport], files: dict[str, IngestReport]):
    """(training rows, [(report, its eval/test parts)]): from separate sources or files when there are any."""
    data = datasets.Dataset.from_parquet(train.path)
    if evaluation:
        shares = {"eval": config.eval_size, "test": config.test_size}
        group = {report.path: DEFAULT_GROUP[report.kind] for report in evaluation}
        held = [
            _group_split(datasets.Dataset.from_parquet(r.path), shares, group[r.path], config.seed) for r in evaluation
        ]
        return data, list(zip(evaluation, held))
    shares = config.shares()
    parts = {"train": data}
    if sum(shares.values()):
        shares["train"] = 1 - sum(shares.values())
        parts = _group_split(data, shares, config.group_by or DEFAULT_GROUP[train.kind], config.seed)
    parts.update({part: datasets.Dataset.from_parquet(report.path) for part, report in files.items()})
    return parts.pop("train"), [(train, parts)]


def _overlap(train: datasets.Dataset, part: datasets.Dataset, kind: str) -> int:
    """How many held-out pairs share a text (the same column's) with a training pair."""
    columns = [c for c in PAIR_TEXTS[kind] if c in part.column_names and c in train.column_names]
    if not len(part) or not columns:
        return 0
    seen = {column: set(train[column]) for column in columns}
    return sum(any(row[c] in seen[c] for c in columns) for row in part.select_columns(columns))


def check_overlap(
    config: SplitConfig, label: str, train: datasets.Dataset, parts: dict[str, datasets.Dataset], kind: str
):
    """{part: "n of m"} of pairs that share a text with training; refuse above split.max_overlap, else say so."""
    found = {}
    for name, part in parts.items():
        count = _overlap(train, part, kind)
        found[name] = f"{count} of {len(part)}"
        if count and count > config.max_overlap * len(part):
            raise EmbedforgeError(
                f"split: {count} of {len(part)} {label} {name} pairs ({count / len(part):.1%}) share a text with "
                f"the training split (split.max_overlap = {config.max_overlap}); their figures would measure "
                f"memory. Remove them from the data, or set split.max_overlap: {count / len(part):.2f} to accept it"
            )
        if count:
            run_logger().warning(
                "%s %s: %s pairs share a text with the training split (allowed)", label, name, found[name]
            )
    return found


@task(name="split-dataset", cache_policy=INPUTS, persist_result=True)
def split_dataset(
    config: SplitConfig,
    train: IngestReport,
    evaluation: list[IngestReport],
    files: dict[str, IngestReport],
    out_dir: str,
) -> Splits:
    """Write the training rows and every evaluation dataset's eval/test parts; return where they are.

    Only what has no data of its own is split: a test or eval file (``files``) is used whole.
    """
    out = Path(out_dir)
    train_part, held_out = _held_out(config, train, evaluation, files)
    (train_path,) = _write({"train": train_part}, out).values()
    result = Splits(train=train_path, train_name=train.label, train_kind=train.kind, evaluation={})
    for report, parts in held_out:
        overlap = check_overlap(config, report.label, train_part, parts, report.kind)
        paths = _write(parts, out / report.label)
        result.evaluation[report.name] = EvalSplit(kind=report.kind, overlap=overlap, **paths)
        counts = {name: len(part) for name, part in parts.items()}
        run_logger().info("Split %s (seed %d): train %d, %s", report.label, config.seed, len(train_part), counts)
    return result
