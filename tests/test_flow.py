"""The whole flow on a tiny model under a real Prefect server: what a user finds afterwards."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from huggingface_hub import ModelCard
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sentence_transformers import SentenceTransformer

from embedforge.flows.finetune import finetune
from embedforge.recipe import Recipe

from conftest import embedded_env, make_pairs, make_recipe, run_cli, trainer_state, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def demo_like_run(tmp_path_factory, _tiny_model_master):
    """One flow run shared by the read-only checks below."""
    root = tmp_path_factory.mktemp("flow")
    shutil.copytree(_tiny_model_master, root / "model")
    data = write_jsonl(root / "pairs.jsonl", make_pairs())
    recipe = Recipe.model_validate(
        make_recipe("tiny-flow", str(root / "model"), data, push={"local_dir": str(root / "published")})
    )
    result = finetune(recipe=recipe, output_dir=str(root / "runs"))
    return recipe, result, root


def test_run_directory_holds_everything_of_the_run(demo_like_run):
    recipe, result, root = demo_like_run
    run_dir = Path(result.run_dir)
    assert run_dir.parent == root / "runs" / "tiny-flow"
    for relative in [
        "recipe.yaml",
        "metrics.json",
        "model/README.md",
        "model/config_sentence_transformers.json",
        "data/ingested/tiny_validation.parquet",
        "data/splits/train.parquet",
        "data/splits/tiny_validation/test.parquet",
    ]:
        assert (run_dir / relative).exists(), relative
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text()) == recipe.model_dump(mode="json")
    assert SentenceTransformer(str(run_dir / "model")).encode(["a question"]).shape == (1, 32)


def test_metrics_compare_base_and_finetuned_on_the_test_split(demo_like_run):
    _, result, _ = demo_like_run
    metrics = json.loads((Path(result.run_dir) / "metrics.json").read_text())
    assert metrics["headline"] == "tiny_validation_cosine_ndcg@10"
    assert set(metrics["base"]) == set(metrics["finetuned"]) and "tiny_validation_cosine_map@100" in metrics["base"]
    # Random-init weights know nothing; three epochs on these pairs teach them to match.
    assert metrics["finetuned"][metrics["headline"]] > metrics["base"][metrics["headline"]]
    assert result.finetuned == metrics["finetuned"][metrics["headline"]]


def test_intervals_reach_metrics_json_and_the_release(demo_like_run):
    _, result, root = demo_like_run
    metrics = json.loads((Path(result.run_dir) / "metrics.json").read_text())
    gain = metrics["intervals"]["gain"]
    assert (
        gain["low"] <= metrics["finetuned"][metrics["headline"]] - metrics["base"][metrics["headline"]] <= gain["high"]
    )
    meta = json.loads((root / "published" / "latest" / "training_meta.json").read_text())
    assert meta["intervals"]["gain"] == gain and len(meta["per_query"]) == gain["n"]
    assert "Δ 95 % CI" in (Path(result.model_dir) / "README.md").read_text()


def test_card_carries_model_index_and_is_published_locally(demo_like_run):
    _, result, root = demo_like_run
    card = ModelCard.load(Path(result.model_dir) / "README.md")
    assert card.data.eval_results and card.data.eval_results[0].dataset_type == "tiny_validation"
    latest = root / "published" / "latest"
    assert result.push.pushed and latest.resolve() == Path(result.push.location).resolve()
    assert json.loads((latest / "training_meta.json").read_text())["recipe"] == "tiny-flow"


def test_dashboard_shows_the_run_and_its_artifacts(demo_like_run):
    _, result, _ = demo_like_run
    flow_run_id = json.loads((Path(result.push.location) / "training_meta.json").read_text())["flow_run_id"]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        # Named after the recipe and the whole run id, like the run directory: unique even within one second.
        assert flow_run.name == "tiny-flow-" + Path(result.run_dir).name and flow_run.state.is_completed()
        assert flow_run.state.name == "Published" and flow_run.state.message == "first release"
        for key in (
            "tiny-flow-gain",
            "tiny-flow-model-card",
            "tiny-flow-push",
            "tiny-flow-history",
            "tiny-flow-release",
        ):
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            assert [a.flow_run_id for a in artifacts] == [flow_run.id], key
        progress = [a for a in client.read_artifacts() if a.type == "progress" and a.flow_run_id == flow_run.id]
        assert [a.data for a in progress] == [100.0]


def test_push_disabled_says_where_the_model_is(recipe_dict, tmp_path, write_recipe):
    recipe_dict["push"] = {"enabled": False}
    recipe_dict["train"]["args"]["num_train_epochs"] = 1
    result = run_cli(write_recipe(recipe_dict), tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "Push: not published (push disabled)" in result.output
    assert "Run directory: " + str(tmp_path / "runs" / "tiny-test") in result.output


def test_a_mapped_column_missing_is_refused_before_any_run(recipe_dict, tmp_path, write_recipe):
    recipe_dict["ingest"]["columns"] = {"anchor": "query", "positive": "context"}
    path = write_recipe(recipe_dict)
    result = run_cli(path, tmp_path / "runs")
    assert result.exit_code == 1
    assert f"{path}: ingest.columns: the data has no column 'query'" in result.output
    assert not (tmp_path / "runs").exists()  # found from the file's first row, before anything started


def test_bad_data_found_during_the_run_keeps_the_run_directory(recipe_dict, tmp_path, write_recipe):
    from embedforge.errors import EmbedforgeError

    # validate reads every row; data broken after it (a pipeline writing while a deployment's run starts) is found
    # by the run's own ingest.
    recipe = Recipe.model_validate(recipe_dict)
    with open(recipe_dict["ingest"]["path"], "a") as handle:
        handle.write('{"question": "broken", \n')
    with pytest.raises(EmbedforgeError, match=r"pairs.jsonl, row 121: not valid JSON"):
        finetune(recipe=recipe, output_dir=str(tmp_path / "runs"))
    assert list((tmp_path / "runs" / "tiny-test").glob("*/recipe.yaml"))


def test_training_resumes_from_the_newest_checkpoint_of_its_run(recipe_dict, tmp_path, caplog):
    import datasets

    from embedforge.config.evaluate import EvaluateConfig
    from embedforge.config.train import TrainConfig
    from embedforge.tasks.train import train_model
    from embedforge.types import Splits

    rows = datasets.Dataset.from_list([{"anchor": f"question {i}", "positive": f"passage {i}"} for i in range(64)])
    rows.to_parquet(str(tmp_path / "train.parquet"))
    splits = Splits(train=str(tmp_path / "train.parquet"), train_name="rows", train_kind="retrieval", evaluation={})
    args = {**recipe_dict["train"]["args"], "save_strategy": "epoch", "num_train_epochs": 1}
    config = TrainConfig(base_model=recipe_dict["train"]["base_model"], args=args)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    train_model(config, splits, EvaluateConfig(), str(run_dir))
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["checkpoint-4"]

    # A finished model is never trained again in its run directory.
    train_model(config, splits, EvaluateConfig(), str(run_dir))
    assert "already holds this run's trained model; not training again" in caplog.text

    # Killed before the model was saved, asked for two epochs: it continues after step 4 instead of starting over.
    shutil.rmtree(run_dir / "model")
    (run_dir / "model_card_data.pkl").unlink()
    longer = config.model_copy(update={"args": {**args, "num_train_epochs": 2}})
    train_model(longer, splits, EvaluateConfig(), str(run_dir))
    assert f"Resuming from {run_dir / 'checkpoints' / 'checkpoint-4'}" in caplog.text
    state = trainer_state(run_dir / "checkpoints" / "checkpoint-8")
    assert state["global_step"] == 8
    # Steps 5-8 ran in epoch two only: the first epoch was not trained again.
    assert all(entry["epoch"] > 1 for entry in state["log_history"] if "loss" in entry and entry["step"] > 4)


def test_a_successful_cli_run_prints_our_lines_and_no_library_noise(recipe_dict, tmp_path, write_recipe):
    """The terminal of `embedforge run` on the embedded server, as a new user reads it top to bottom."""
    import subprocess
    import sys

    recipe_dict["train"]["args"].update({"disable_tqdm": False, "num_train_epochs": 1})
    recipe_dict["mine"] = {}  # mining encodes with the library's bars hard-wired on
    env = embedded_env(tmp_path, fresh=True)  # a first run on a fresh install: its database is made here
    env.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)  # the README's way: embedded API
    command = [
        str(Path(sys.executable).parent / "embedforge"),
        "run",
        str(write_recipe(recipe_dict)),
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for noise in [
        "Traceback",
        "ERROR",
        "Generating train split",
        "Creating parquet",
        "Loading weights",
        "{'loss'",
        "pin_memory",
        "Computing widget examples",
        "Batches",
        "bm25s",
    ]:
        assert noise not in output, noise
    assert "Task run 'train-model" in output and "step 5/" in output  # our stage lines
    assert "it/s]" in output  # the trainer's own progress bar stays
    summary = output[output.index("Run directory: ") :].splitlines()
    assert summary[1].startswith("tiny_validation_cosine_ndcg@10: base ") and " -> fine-tuned " in summary[1]
    assert re.match(r"  gain [+-]0\.\d{4}, 95 % CI \[[+-]0\.\d{4}, [+-]0\.\d{4}\] over 30 test queries$", summary[2])
    assert re.match(
        r"  keyword search on the same queries: BM25 [01]\.\d{4}, hybrid [01]\.\d{4}; fine-tuned minus BM25 "
        r"[+-][01]\.\d{4}, 95 % CI \[[+-][01]\.\d{4}, [+-][01]\.\d{4}\]$",
        summary[3],
    )
    # 30 test queries cannot tell a few hundredths: the run says so.
    assert re.match(r"  Warning: the test split is (too small to tell|small): over 30 queries the gain's", summary[4])
    assert summary[5].startswith("Push: published to ") and re.match(r"Wall time: \d+ min \d\d s$", summary[6])


def test_separate_train_and_test_files_run_as_given(recipe_dict, tmp_path, write_recipe):
    import pandas as pd

    rows = make_pairs(130)
    recipe_dict["ingest"]["path"] = str(write_jsonl(tmp_path / "train.jsonl", rows[:100]))
    recipe_dict["split"] = {"test_file": str(write_jsonl(tmp_path / "test.jsonl", rows[100:])), "eval_size": 0.0}
    recipe_dict["train"]["args"]["num_train_epochs"] = 1
    result = run_cli(write_recipe(recipe_dict), tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "runs" / "tiny-test").iterdir())
    assert len(pd.read_parquet(run_dir / "data" / "splits" / "train.parquet")) == 100
    test = pd.read_parquet(run_dir / "data" / "splits" / "tiny_validation" / "test.parquet")
    assert sorted(test["anchor"]) == sorted(row["question"] for row in rows[100:])  # every row, nothing else
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # 30 queries, one relevant passage each: accuracy@1 counts whole queries out of 30.
    hits = metrics["finetuned"]["tiny_validation_cosine_accuracy@1"] * 30
    assert abs(hits - round(hits)) < 1e-9
    assert (
        "tiny_validation (test file)"
        in json.loads((tmp_path / "published" / "latest" / "training_meta.json").read_text())["data_fingerprint"]
    )


def _moved_from(base: str, model: str) -> bool:
    """The model embeds a question differently from its base: it was trained (and loads as trained)."""
    question = ["what is known about the castle?"]
    trained, before = SentenceTransformer(model).encode(question), SentenceTransformer(base).encode(question)
    return trained.shape == before.shape and abs(trained - before).max() > 1e-3


def test_cached_mnrl_trains_a_large_batch_in_mini_batches(tmp_path, tiny_model, pairs_file):
    recipe = make_recipe("tiny-cached", tiny_model, pairs_file, train_args={"per_device_train_batch_size": 64}, push={})
    recipe["train"]["loss"] = {"name": "CachedMultipleNegativesRankingLoss", "args": {"mini_batch_size": 8}}
    result = finetune(recipe=Recipe.model_validate(recipe), output_dir=str(tmp_path / "runs"))
    assert _moved_from(tiny_model, result.model_dir)  # it trained
    card = (Path(result.model_dir) / "README.md").read_text()
    assert "Loss: [<code>CachedMultipleNegativesRankingLoss</code>]" in card and '"mini_batch_size": 8' in card


def test_mined_negatives_reach_training_the_card_and_the_dashboard(tmp_path, tiny_model, pairs_file):
    recipe = make_recipe("tiny-mined", tiny_model, pairs_file, split={"group_by": "topic"}, push={})
    recipe["ingest"]["keep"] = ["topic"]
    recipe["mine"] = {"num_negatives": 1}
    result = finetune(recipe=Recipe.model_validate(recipe), output_dir=str(tmp_path / "runs"))
    run_dir = Path(result.run_dir)
    mined = pd.read_parquet(run_dir / "data" / "mined" / "train.parquet")
    assert list(mined.columns) == ["anchor", "positive", "negative_1"]
    card = (run_dir / "model" / "README.md").read_text()
    assert "### Hard Negatives" in card and "same-group candidates skipped" in card
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tiny-mined-mining"]))
        )
    assert artifact.data.startswith("## Hard-negative mining")


def test_training_curves_go_to_tensorboard_and_mlflow_offline(tmp_path, tiny_model, pairs_file, monkeypatch):
    pytest.importorskip("tensorboard")
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    recipe = make_recipe(
        "tiny-tracking",
        tiny_model,
        pairs_file,
        train_args={"report_to": ["tensorboard", "mlflow"], "logging_steps": 2},
        push={},
    )
    result = finetune(recipe=Recipe.model_validate(recipe), output_dir=str(tmp_path / "runs"))
    run_dir = Path(result.run_dir)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    (run,) = mlflow.search_runs(
        filter_string=f"attributes.run_name = 'tiny-tracking-{run_dir.name}'",
        search_all_experiments=True,
        output_format="list",
    )
    assert "loss" in run.data.metrics
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts() if a.key and a.key.startswith("tiny-tracking-tracking")}
        assert keys == {"tiny-tracking-tracking-tensorboard", "tiny-tracking-tracking-mlflow"}


@pytest.mark.parametrize("merge", [False, True], ids=["adapter", "merged"])
def test_a_lora_adapter_is_trained_evaluated_and_published(tmp_path, tiny_model, pairs_file, merge):
    pytest.importorskip("peft")
    recipe = make_recipe(
        "tiny-lora",
        tiny_model,
        pairs_file,
        train_args={"learning_rate": 5e-3},  # LoRA trains few weights, at a higher rate than full fine-tuning
        push={"local_dir": str(tmp_path / "published")},
    )
    recipe["train"]["peft"] = {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"], "merge": merge}
    first = finetune(recipe=Recipe.model_validate(recipe), output_dir=str(tmp_path / "runs"))
    model_dir = Path(first.model_dir)
    assert (model_dir / "adapter_config.json").exists() != merge
    assert (model_dir / "model.safetensors").exists() == merge
    # The tiny model is random-init, so a rank-8 adapter need not beat it: the test is that the adapter is
    # what gets saved, published, loaded back and measured.
    assert first.push.pushed and first.push.reason == "first release"
    assert _moved_from(tiny_model, str(tmp_path / "published" / "latest"))  # the release applies the adapter
    # On another test split, champion/challenger loads the published adapter (or merged model) back and measures it.
    recipe["split"] = {"test_size": 0.3, "seed": 11}
    again = finetune(recipe=Recipe.model_validate(recipe), output_dir=str(tmp_path / "runs"))
    assert again.push.champion is not None and (Path(again.run_dir) / "champion-metrics.json").exists()


def test_training_prompts_are_named_in_the_card(tmp_path, tiny_model, pairs_file):
    prompts = {"anchor": "query: ", "positive": "passage: "}
    recipe = make_recipe("tiny-prompts", tiny_model, pairs_file, train_args={"prompts": prompts}, push={})
    result = finetune(recipe=Recipe.model_validate(recipe), output_dir=str(tmp_path / "runs"))
    hyperparameters = (Path(result.model_dir) / "README.md").read_text().split("#### Non-Default Hyperparameters")[1]
    assert f"- `prompts`: {prompts}" in hyperparameters
