"""Split: seeded, group-aware train/eval/test splits of the ingested data.

Side effect: writes ``<dir>/train.parquet`` and, per evaluation dataset,
``<dir>/<name>/eval.parquet`` and ``<dir>/<name>/test.parquet``.
"""

from __future__ import annotations

import math
from pathlib import Path

import datasets
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from embedforge.columns import PAIR_TEXTS
from embedforge.config.split import SplitConfig
from embedforge.errors import EmbedforgeError
from embedforge.logs import run_logger
from embedforge.types import EvalSplit, IngestReport, Splits

# A passage (or sentence pair's first side) that appears twice must stay in one split,
# or the test numbers measure memorisation.
DEFAULT_GROUP = {kind: texts[1] if kind == "retrieval" else texts[0] for kind, texts in PAIR_TEXTS.items()}


def _joined_by_texts(data: datasets.Dataset, group: str, kind: str) -> tuple[datasets.Dataset, str]:
    """The data with a column grouping rows that share a group value or a text (the same column's, as the leakage
    check compares them), connected components of the graph rows and texts make; and that column's name.

    Split by it, no carved eval or test pair can share a text with training: a sentence repeated across
    documents, or a question asked of two passages, keeps its pairs on one side, and the leakage check has
    nothing to refuse in a split the run made itself.
    """
    import numpy as np
    import pandas as pd
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if group not in data.column_names:
        raise EmbedforgeError(
            f"split: group column {group!r} is not in the data ({data.column_names}); keep it with ingest.keep"
        )
    columns = [group, *(c for c in PAIR_TEXTS[kind] if c in data.column_names and c != group)]
    frame = data.select_columns(columns).to_pandas()
    keys, _ = pd.factorize(pd.concat([column + "\x00" + frame[column].astype(str) for column in columns]))
    rows, size = np.tile(np.arange(len(frame)), len(columns)), len(frame) + int(keys.max()) + 1
    graph = coo_matrix((np.ones(len(keys)), (rows, len(frame) + keys)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    # Each component is named by its first group value: where no text joins two groups, the groups and their seeded
    # assignment are exactly those of the group column alone, so a split made before stays the same.
    component = pd.Series(labels[: len(frame)], index=frame.index)
    named = component.map(frame[group].groupby(component).min())
    name = f"{group}, joined by shared texts"
    return data.add_column(name, named.tolist()), name


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
    try:
        assignment = _assign_groups(groups, shares, seed)
    except ValueError:  # datasets' own refusal: a part would be left empty
        parts = ", ".join(f"{name} {share:.2f}" for name, share in shares.items() if share)
        raise EmbedforgeError(
            f"split: {len(groups)} distinct {group!r} values are too few to divide as {parts} with none empty; "
            "add data, or lower split.eval_size (0 makes no eval part) or split.test_size"
        ) from None
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
        joined, group = _joined_by_texts(data, config.group_by or DEFAULT_GROUP[train.kind], train.kind)
        parts = {
            name: part.remove_columns(group) for name, part in _group_split(joined, shares, group, config.seed).items()
        }
    parts.update({part: datasets.Dataset.from_parquet(report.path) for part, report in files.items()})
    return parts.pop("train"), [(train, parts)]


def shared_pairs(part: datasets.Dataset, others: list[datasets.Dataset], kind: str) -> int:
    """How many of `part`'s pairs share a text (the same column's) with a pair of the others."""
    columns = [c for c in PAIR_TEXTS[kind] if c in part.column_names and any(c in o.column_names for o in others)]
    if not len(part) or not columns:
        return 0
    seen = {c: {text for other in others if c in other.column_names for text in other[c]} for c in columns}
    return sum(any(row[c] in seen[c] for c in columns) for row in part.select_columns(columns))


def _share_up(share: float) -> str:
    """A share rounded up to three decimals: a max_overlap that accepts it (1 of 1571 is 0.001, not 0.00)."""
    return f"{math.ceil(share * 1000) / 1000:g}"


def check_overlap(
    config: SplitConfig, label: str, train: datasets.Dataset, parts: dict[str, datasets.Dataset], kind: str
):
    """{part: "n of m"} of pairs that share a text with training; refuse above split.max_overlap, else say so."""
    found = {}
    for name, part in parts.items():
        count = shared_pairs(part, [train], kind)
        found[name] = f"{count} of {len(part)}"
        if count and count > config.max_overlap * len(part):
            raise EmbedforgeError(
                f"split: {count} of {len(part)} {label} {name} pairs ({count / len(part):.1%}) share a text with "
                f"the training split (split.max_overlap = {config.max_overlap}); their figures would measure "
                f"memory. Remove them from the data, or set split.max_overlap: {_share_up(count / len(part))} to "
                "accept it"
            )
        if count:
            run_logger().warning(
                "%s %s: %s pairs share a text with the training split (allowed)", label, name, found[name]
            )
    return found


@task(name="split-dataset", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
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


@task(name="check-general-overlap")
def check_general_overlap(config: SplitConfig, splits: Splits) -> dict[str, str]:
    """{general set: "n of m"} of its pairs that share a text with the training, eval or test split; refused above
    split.max_overlap, since a general set measures what the model kept outside what it was trained and tested on."""
    paths = [splits.train, *(path for part in ("eval", "test") for _, path in splits.parts(part).values())]
    domain = [datasets.Dataset.from_parquet(path) for path in paths]
    found = {}
    for name, path in splits.general.items():
        general = datasets.Dataset.from_parquet(path)
        count = shared_pairs(general, domain, "retrieval")
        found[name] = f"{count} of {len(general)}"
        if count and count > config.max_overlap * len(general):
            raise EmbedforgeError(
                f"evaluate.general: {count} of {len(general)} pairs of {name} share a text with the training, eval or "
                f"test split (split.max_overlap = {config.max_overlap}); its figures would not measure general "
                "ability. Give a set the model never trains or is tested on"
            )
    return found
