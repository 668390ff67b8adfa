"""Retraining that costs nothing when nothing changed: the run ends at the up-to-date check, naming the release."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

from embedforge.flows.finetune import finetune
from embedforge.recipe import Recipe
from embedforge.tasks.release import changes
from embedforge.types import RunRecord

from conftest import make_pairs, run_cli, wait_for, write_jsonl


def _recipe(data: dict) -> Recipe:
    return Recipe.model_validate(copy.deepcopy(data))


def _record(recipe: Recipe, fingerprint: str = "f1") -> RunRecord:
    return RunRecord(
        recipe=recipe.name,
        recipe_yaml="",
        recipe_hash=recipe.fingerprint(),
        model_hash=recipe.model_fingerprint(),
        base_model_id="base@1",
        run_id="r1",
        run_dir="/tmp/r1",
        data=[],
    )


def test_only_what_makes_the_model_counts_as_a_change(recipe_dict):
    published = _record(_recipe(recipe_dict)).model_dump()
    meta = {"model_hash": published["model_hash"], "base_model_id": "base@1", "data_fingerprint": {}}
    card_only = copy.deepcopy(recipe_dict)
    card_only["card"]["license"] = "mit"
    card_only["push"]["require_improvement"] = False
    card_only["deployment"] = {"work_pool": "other", "tags": ["x"]}
    assert changes(_record(_recipe(card_only)), meta) == []
    new_arg = copy.deepcopy(recipe_dict)
    new_arg["train"]["args"]["learning_rate"] = 1e-4
    assert changes(_record(_recipe(new_arg)), meta) == ["the recipe's ingest, split, train or evaluate settings"]
    new_base = _record(_recipe(recipe_dict)).model_copy(update={"base_model_id": "base@2"})
    assert changes(new_base, meta) == ["the base model (base@1 -> base@2)"]
    # A release made before embedforge recorded these fields is never taken as up to date.
    assert changes(_record(_recipe(recipe_dict)), {"data_fingerprint": {}}) != []


def _task_runs(flow_run_id) -> dict[str, str]:
    """{task name: its final state name}. The server records task runs from events, a moment after the flow
    returns: wait until every run has a final state and two reads agree."""
    seen: list[dict] = []

    def settled():
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        if runs and all(run.state and run.state.is_final() for run in runs):
            seen.append({run.name.rsplit("-", 1)[0]: run.state.name for run in runs})
            return len(seen) > 1 and seen[-1] == seen[-2] and seen[-1]

    return wait_for(settled, 30, f"the task runs of flow run {flow_run_id} to reach final states")


def _run(recipe: dict, runs: Path):
    state = finetune(recipe=_recipe(recipe), output_dir=str(runs), return_state=True)
    return state.result(), _task_runs(state.state_details.flow_run_id)


def _latest_artifact(key: str):
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return max(found, key=lambda a: a.created)


@pytest.mark.usefixtures("prefect_server")
def test_a_second_run_on_the_same_inputs_trains_nothing(recipe_dict, tmp_path, write_recipe):
    runs = tmp_path / "runs"
    first, _ = _run(recipe_dict, runs)
    assert first.push.pushed
    release = f"tiny-test-{Path(first.run_dir).name}"

    live = _latest_artifact("tiny-test-release")
    assert f"Live release of tiny-test: {release}" in live.data

    state = finetune(recipe=_recipe(recipe_dict), output_dir=str(runs), return_state=True)
    assert state.name == "Up to date" and release in state.message
    again, tasks = state.result(), _task_runs(state.state_details.flow_run_id)
    assert again.up_to_date.release == release and again.finetuned == first.finetuned
    assert set(tasks) == {"ingest-dataset", "check-release", "fetch-release-meta", "record-outcome"}, tasks
    run_dir = Path(again.run_dir)
    # No split, model or metrics: the data, the recipe and what the run started with (its lock file aside).
    assert sorted(p.name for p in run_dir.iterdir() if p.name != ".engine.lock") == [
        "data",
        "inputs.json",
        "recipe.yaml",
    ]
    assert _latest_artifact("tiny-test-push").data.startswith(f"## Up to date: {release}")
    # The history gained a row; the live release did not change, as no release was published.
    # Newest first; the rows below these two are other tests' runs of a recipe of the same name.
    history = json.loads(_latest_artifact("tiny-test-history").data)
    rows = [(row["run"], row["decision"]) for row in history[:2]]
    assert rows == [(Path(again.run_dir).name, "up to date"), (Path(first.run_dir).name, "published")]
    assert history[1]["fine-tuned"] == f"{first.finetuned:.4f}"
    assert _latest_artifact("tiny-test-release").id == live.id

    # A card-only change is still the same model; the CLI says which release it matched.
    card_only = copy.deepcopy(recipe_dict)
    card_only["card"]["license"] = "mit"
    result = run_cli(write_recipe(card_only), runs)
    assert result.exit_code == 0, result.output
    assert f"Up to date with release {release} at {tmp_path / 'published'}: nothing trained" in result.output

    forced = run_cli(write_recipe(card_only), runs, "--force")
    assert forced.exit_code == 0 and "fine-tuned" in forced.output, forced.output
    # Training the same inputs again gives the same figures: no second copy of the same model is published.
    assert "equals the published model's: kept the published model" in forced.output
    assert sorted(p.name for p in (tmp_path / "published").iterdir()) == ["latest", release]
    assert [row["decision"] for row in json.loads(_latest_artifact("tiny-test-history").data)][0] == "champion kept"


@pytest.mark.usefixtures("prefect_server")
def test_changed_data_or_arguments_retrain_and_reuse_the_base_numbers(recipe_dict, tmp_path):
    runs = tmp_path / "runs"
    first, tasks = _run(recipe_dict, runs)
    assert tasks["measure-base-model"] == "Completed"

    new_arg = copy.deepcopy(recipe_dict)
    new_arg["train"]["args"]["learning_rate"] = 4e-4
    retrained, tasks = _run(new_arg, runs)
    assert retrained.up_to_date is None and tasks["train-model"] == "Completed"
    # Same base model, test split and evaluator settings: the base model is not measured again.
    assert tasks["measure-base-model"] == "Cached" and retrained.base == first.base

    rows = make_pairs()
    rows[0]["context"] += " Reopened after repairs."  # one changed row changes the data fingerprint
    write_jsonl(Path(recipe_dict["ingest"]["path"]), rows)
    retrained, tasks = _run(recipe_dict, runs)
    assert retrained.up_to_date is None and tasks["train-model"] == "Completed"
    meta = json.loads((tmp_path / "published" / "latest" / "training_meta.json").read_text())
    assert set(meta) >= {"model_hash", "base_model_id", "data_fingerprint"}
