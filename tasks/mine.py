"""Mine: hard negatives for the training pairs, from the training split's own passages.

Side effect: writes ``<run>/data/mined/`` (the pairs with their negatives, and the pairs left with
in-batch negatives only) and publishes the mining report. sentence-transformers' ``mine_hard_negatives``
ranks the candidates; two things it cannot know are decided here:

- a passage of the positive's own group (``split.group_by``: the same module, article or rule) is
  never a negative for it: such passages are near-paraphrases, and pushing them apart teaches the
  model the opposite of what it should learn;
- no training pair is lost: one without enough eligible negatives trains with in-batch negatives
  only, where the library's own output would drop it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from statistics import fmean

import datasets
from prefect import task

from embedforge.artifacts import create_markdown_artifact
from embedforge.config.mine import MineConfig
from embedforge.data_reports import MiningReport
from embedforge.hashing import file_digest
from embedforge.logs import run_logger
from embedforge.mining import mining_warnings
from embedforge.models import base_model_identity, load_model
from embedforge.reports import mining_markdown
from embedforge.stage_progress import encoding_progress
from embedforge.types import Splits


def _mining_key(context, parameters) -> str:
    """A retry or resume of the run does not mine again: same training rows, settings, model and folder."""
    config, splits = parameters["config"], parameters["splits"]
    model = base_model_identity(config.model, config.model_revision)
    key = [file_digest(splits.train).hex(), config.model_dump(mode="json"), model, parameters["out_dir"]]
    return "embedforge-mined-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _width(config: MineConfig, largest_group: int) -> int:
    """Candidates to ask the library for: enough that the same-group ones can be skipped and n remain."""
    wanted = config.num_negatives + largest_group - 1
    if config.sampling_strategy == "random":
        wanted = max(wanted, 10 * config.num_negatives)
    if config.range_max:
        wanted = min(wanted, config.range_max - config.range_min)
    return max(wanted, config.num_negatives)


def _candidates(data: datasets.Dataset, config: MineConfig, model, width: int) -> dict[tuple, list]:
    """{(anchor, positive): [(passage, score), ...] hardest first} from the library, plus the positive's score."""
    corpus = list(dict.fromkeys(data["positive"]))
    with encoding_progress(model, "mine (encoding)", len(data) + len(corpus)):
        mined = _library_mining(data, config, model, width, corpus)  # its bars: off in logs.quiet_libraries
    return {
        (row["anchor"], row["positive"][0]): list(zip(row["positive"], row["scores"], strict=True)) for row in mined
    }


def _library_mining(data: datasets.Dataset, config: MineConfig, model, width: int, corpus: list[str]):
    from sentence_transformers.util import mine_hard_negatives

    return mine_hard_negatives(
        data.select_columns(["anchor", "positive"]),
        model,
        corpus=corpus,
        query_prompt=(config.prompts or {}).get("anchor"),
        corpus_prompt=(config.prompts or {}).get("positive"),
        range_min=config.range_min,
        range_max=config.range_max,
        max_score=config.max_score,
        min_score=config.min_score,
        absolute_margin=config.absolute_margin,
        relative_margin=config.relative_margin,
        num_negatives=width,
        sampling_strategy="top",
        output_format="labeled-list",
        output_scores=True,
        batch_size=config.batch_size,
        use_faiss=config.use_faiss,
        verbose=False,
    )


def _choose(config: MineConfig, eligible: list, rng: random.Random) -> list:
    if config.sampling_strategy == "random" and len(eligible) > config.num_negatives:
        eligible = sorted(rng.sample(eligible, config.num_negatives), key=lambda c: -c[1])
    return eligible[: config.num_negatives]


def _assign(data: datasets.Dataset, group: str, candidates: dict, config: MineConfig) -> tuple[list, list, dict]:
    """Each training row's negatives, none of its own group; rows without enough keep training without."""
    groups: dict[str, set] = defaultdict(set)
    for passage, key in zip(data["positive"], data[group], strict=True):
        groups[passage].add(key)
    rng, mined, in_batch = random.Random(config.seed), [], []
    stats = {"skipped": 0, "pos": [], "neg": [], "few_candidates": 0, "own_group": 0}
    for row in data:
        found = candidates.get((row["anchor"], row["positive"]), [])
        eligible = [c for c in found[1:] if row[group] not in groups[c[0]]]
        stats["skipped"] += len(found[1:]) - len(eligible)
        chosen = _choose(config, eligible, rng)
        if len(chosen) < config.num_negatives:
            # Why, for the report: the library found too few in its window, or they were of the own group.
            stats["few_candidates" if len(found[1:]) < config.num_negatives else "own_group"] += 1
            in_batch.append({"anchor": row["anchor"], "positive": row["positive"]})
            continue
        mined.append(
            {"anchor": row["anchor"], "positive": row["positive"]}
            | {f"negative_{i}": text for i, (text, _) in enumerate(chosen, start=1)}
        )
        stats["pos"].append(found[0][1])
        stats["neg"] += [score for _, score in chosen]
    return mined, in_batch, stats


def _report(config: MineConfig, rows: int, mined: list, in_batch: list, stats: dict) -> MiningReport:
    report = MiningReport(
        model=config.model,
        rows=rows,
        mined_rows=len(mined),
        in_batch_only_rows=len(in_batch),
        negatives_per_anchor=config.num_negatives,
        same_group_skipped=stats["skipped"],
        few_candidates_rows=stats["few_candidates"],
        own_group_rows=stats["own_group"],
        positive_score=fmean(stats["pos"]) if stats["pos"] else None,
        negative_score=fmean(stats["neg"]) if stats["neg"] else None,
        settings=config.model_dump(exclude_defaults=True),
    )
    return report.model_copy(update={"warnings": mining_warnings(config, report)})


def _write(rows: list[dict], path: Path) -> str | None:
    if not rows:
        return None
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return str(path)


@task(name="mine-hard-negatives", cache_key_fn=_mining_key, persist_result=True)
def mine_hard_negatives(
    config: MineConfig, splits: Splits, group_by: str | None, out_dir: str, artifact_key: str | None = None
) -> Splits:
    """Give each training pair hard negatives from the other training passages; hand on the mined splits."""
    data = datasets.Dataset.from_parquet(splits.train)
    group = group_by or "positive"  # without a group column, a passage is its own group
    largest = max(Counter(data[group]).values())
    candidates = _candidates(data, config, load_model(config.model, config.model_revision), _width(config, largest))
    mined, in_batch, stats = _assign(data, group, candidates, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = _report(config, len(data), mined, in_batch, stats)
    mined_path, pairs_path = _write(mined, out / "train.parquet"), _write(in_batch, out / "in-batch-only.parquet")
    run_logger().info(
        "Mined %d negative(s) for %d of %d training pairs (%d train with in-batch negatives only); "
        "skipped %d same-group candidates; mean similarity to the anchor: positives %s, negatives %s",
        *(config.num_negatives, report.mined_rows, report.rows, report.in_batch_only_rows, report.same_group_skipped),
        *(f"{score:.4f}" if score is not None else "-" for score in (report.positive_score, report.negative_score)),
    )
    for warning in report.warnings:
        run_logger().warning("Mining: %s", warning)
    if artifact_key:
        create_markdown_artifact(f"## Hard-negative mining\n\n{mining_markdown(report)}", key=artifact_key)
    mined_files = {"train": mined_path or pairs_path, "in_batch_only": mined_path and pairs_path}
    return splits.model_copy(update={**mined_files, "mining": report, "unmined": splits.unmined or splits.train})
