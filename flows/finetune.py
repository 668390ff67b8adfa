"""The fine-tuning flow, wired as the DAG reads.

ingest -> up to date? -> split -> (choose how to mine) -> (the eval pairs train too) -> (mine) -> train
-> (rounds) -> (merge with the base) -> evaluate -> gate -> (train, evaluate and gate the reranker) -> (export the
serving backends) -> card -> champion -> decide -> (approval) -> push -> outcome. Every decision is a task the
dashboard's graph shows, and the flow run's final state is named after the one that ended the run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.states import Cancelled

from embedforge.decisions import ReleaseDecision
from embedforge.flows.approval import wait_for_approval
from embedforge.flows.corpus import pairs_from_corpus
from embedforge.flows.run import (
    RunResult,
    finish,
    flow_run_name,
    outcome,
    push_outcome,
    record_failure,
    run_record,
    start_run,
    up_to_date,
)
from embedforge.flows.rundir import check_same_inputs
from embedforge.logs import run_logger
from embedforge.recipe import Recipe
from embedforge.tasks.card import render_model_card, render_reranker_card
from embedforge.tasks.champion import measure_champion
from embedforge.tasks.choose import choose_mining, chosen_setting
from embedforge.tasks.decide import decide_release
from embedforge.tasks.evaluate import evaluate_model, measure_base_model
from embedforge.tasks.evaluate_rerank import evaluate_reranker
from embedforge.tasks.export import export_backends
from embedforge.tasks.gate import check_quality_gate, check_reranker_gate
from embedforge.tasks.ingest import ingest_dataset
from embedforge.tasks.merge import merge_with_base
from embedforge.tasks.mine import mine_hard_negatives
from embedforge.tasks.push import push_model
from embedforge.tasks.refit import carved_eval, fold_eval_into_training, held_out_by
from embedforge.tasks.release import find_current_release
from embedforge.tasks.rerank import train_reranker
from embedforge.tasks.rounds import train_rounds
from embedforge.tasks.split import check_general_overlap, split_dataset
from embedforge.tasks.train import train_model
from embedforge.training.interrupt import TrainingInterrupted
from embedforge.types import Metrics, RunRecord, Splits, TrainedModel, artifact_key


def _ingest(recipe: Recipe, run_dir: Path) -> RunRecord:
    """The training data (made from documents, for a corpus recipe) and separate evaluation sources, then the
    test and eval files and the general sets, used whole: what the run is made of."""
    ingested = str(run_dir / "data" / "ingested")
    sources = recipe.sources
    corpus = None
    if recipe.corpus:
        corpus = pairs_from_corpus(recipe, run_dir)
        sources[0] = recipe.ingest.model_copy(update={"path": corpus.path})
    data = [ingest_dataset(source, ingested) for source in sources]
    files = {part: ingest_dataset(source, f"{ingested}/{part}") for part, source in recipe.files.items()}
    general = {source.name: ingest_dataset(source, f"{ingested}/general") for source in recipe.evaluate.general}
    return run_record(recipe, run_dir, data, files, corpus).model_copy(update={"general": general})


def _split(recipe: Recipe, run_dir: Path, record: RunRecord) -> Splits:
    splits = split_dataset(
        recipe.split, record.data[0], record.data[1:], record.files, str(run_dir / "data" / "splits")
    ).model_copy(update={"general": {name: report.path for name, report in record.general.items()}})
    if splits.general:
        check_general_overlap(recipe.split, splits)
    return _training_data(recipe, splits, run_dir / "data")


def _training_data(recipe: Recipe, splits: Splits, data: Path) -> Splits:
    """Mining as the recipe says or as mine.choose chose on the eval split; then the eval pairs carved out to
    choose on train too, unless a stage after training still reads them."""
    mine = recipe.mine
    key = artifact_key(recipe.name, "mining")
    chosen = None
    if mine and mine.choose:
        chosen = choose_mining(recipe, splits, str(data / "mining-trials"), key)
        mine = chosen_setting(recipe.mine, chosen.mining_trials)  # the choice's artifact stays
        key = None
    carved = carved_eval(recipe, splits)
    held = held_out_by(recipe)
    if carved and not held:
        splits = fold_eval_into_training(splits, carved, str(data / "splits"))
    elif chosen:
        return chosen  # mined already, by the candidate that won
    if carved and held and recipe.split.refit:
        run_logger().info("The eval pairs stay out of training: %s", held)
    if mine:
        splits = mine_hard_negatives(mine, splits, recipe.split.group_by, str(data / "mined"), key)
    return splits.model_copy(update={"mining_trials": chosen.mining_trials if chosen else []})


def _serving(
    recipe: Recipe, model: TrainedModel, splits: Splits, metrics: Metrics, record: RunRecord
) -> tuple[TrainedModel, Metrics]:
    """(rerank: train -> evaluate -> gate) -> (export): what the release serves beside the embedder's weights."""
    if recipe.rerank:
        model = train_reranker(recipe.rerank, recipe.evaluate, model, splits)
        metrics = evaluate_reranker(recipe.rerank, recipe.evaluate, model, splits, metrics)
        metrics = check_reranker_gate(recipe.rerank, metrics, record.artifact_key("rerank"))
    if recipe.export:
        model = export_backends(recipe, model, splits, metrics, record.artifact_key("export"))
    return model, metrics


def _release(
    recipe: Recipe, model: TrainedModel, splits: Splits, metrics: Metrics, record: RunRecord
) -> ReleaseDecision:
    """card -> champion -> decide -> (approval) -> push: the model card (and the reranker's) written, then
    published if it beats the release (and a person approves, when the recipe asks for one)."""
    render_model_card(recipe, model, splits, metrics, record)
    if metrics.rerank and metrics.rerank.kept:
        render_reranker_card(recipe, model, metrics, record)
    champion = measure_champion(recipe.push, recipe.evaluate, splits, model, metrics)
    decision = decide_release(recipe.push, record, metrics, champion)
    decision = wait_for_approval(recipe.push, record, decision, model, metrics)
    return push_model(recipe.push, model, record, metrics, decision)


def _train_and_release(recipe: Recipe, run_dir: Path, record: RunRecord, splits: Splits):
    """train -> (rounds) -> (merge) -> evaluate -> gate -> (rerank, export) -> card -> champion -> decide -> push."""
    model = train_model(recipe.train, splits, recipe.evaluate, str(run_dir), record.artifact_key("tracking"))
    if recipe.corpus and recipe.corpus.rounds > 1:
        model = train_rounds(recipe, model, splits, record.artifact_key("rounds"))
    base = measure_base_model(recipe.evaluate, model, splits, record.base_model_id)
    if recipe.merge:
        model = merge_with_base(recipe, model, splits, base.figures, record.artifact_key("merge"))
    metrics = evaluate_model(recipe.evaluate, model, splits, base, str(run_dir / "metrics.json"))
    if rejected := check_quality_gate(recipe.evaluate, metrics, model.model_dir, record.artifact_key("gain")):
        result = RunResult.trained(run_dir, model.model_dir, metrics, record)
        return finish(record, result, outcome(record, "rejected", rejected, metrics))
    model, metrics = _serving(recipe, model, splits, metrics, record)
    result = RunResult.trained(run_dir, model.model_dir, metrics, record)
    result.push = _release(recipe, model, splits, metrics, record)
    return finish(record, result, push_outcome(record, metrics, result.push))


@flow(name="finetune", flow_run_name=flow_run_name, on_failure=[record_failure])
def finetune(
    recipe: Recipe, output_dir: str | None = None, resume_dir: str | None = None, force: bool = False
) -> RunResult:
    """Fine-tune one embedding model from its recipe and publish it if it earns it.

    A run whose data, recipe and base model are the published release's trains nothing, unless `force` is set.
    """
    with start_run(recipe, output_dir, resume_dir) as run_dir:
        record = _ingest(recipe, run_dir)
        check_same_inputs(run_dir, record.recipe_hash, record.fingerprints)
        if current := find_current_release(recipe.push, record, force):
            return finish(record, *up_to_date(run_dir, record, current))
        splits = _split(recipe, run_dir, record)
        try:
            return _train_and_release(recipe, run_dir, record, splits)
        except TrainingInterrupted as stop:  # Ctrl-C: a decision of the person at the terminal, not a crash
            return Cancelled(message=f"{stop}. Continue it with `embedforge resume {run_dir}`")
