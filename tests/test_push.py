"""Publishing: the real huggingface_hub client against a local Hub stand-in (the Hub is unreachable here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from prefect import get_client

from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.push import PushConfig
from embedforge.decisions import ReleaseDecision
from embedforge.errors import EmbedforgeError
from embedforge.flows.finetune import finetune
from embedforge.recipe import Recipe
from embedforge.tasks.champion import measure_champion
from embedforge.tasks.decide import decide_release
from embedforge.tasks.push import push_model
from embedforge.types import EvalSplit, Metrics, RunRecord, Splits, TrainedModel

from conftest import cli, make_pairs, prefect_home, run_cli, write_jsonl
from hub_server import LocalHub

TOKEN = "hf_embedforgeTestToken0123456789"


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    # The suite runs with HF_HUB_OFFLINE=1; these tests talk to a Hub, the local one.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield


@pytest.fixture
def hub(prefect_server):
    with LocalHub() as local_hub:
        yield local_hub


def _hub_recipe(recipe_dict: dict, hub: LocalHub, **push) -> Recipe:
    recipe_dict["push"] = {
        "repo_id": "tiny-model",
        "organization": "acme",
        "endpoint": hub.url,
        "retry_delay_seconds": 0,
        **push,
    }
    return Recipe.model_validate(recipe_dict)


@pytest.fixture
def release(prefect_server, tiny_model, tmp_path):
    """measure-champion, decide-release and push-model on the tiny model as a run calls them: a test split of
    real pairs, a headline score."""
    folder = tmp_path / "splits"
    folder.mkdir()
    pd.DataFrame(
        {"anchor": [r["question"] for r in make_pairs(20)], "positive": [r["context"] for r in make_pairs(20)]}
    ).to_parquet(folder / "test.parquet")
    splits = Splits(
        train=str(folder / "test.parquet"),
        train_name="docs",
        train_kind="retrieval",
        evaluation={"": EvalSplit(kind="retrieval", test=str(folder / "test.parquet"))},
    )

    def push(
        config: PushConfig, run_id: str = "rel-1", score: float = 0.5, test_key: str | None = None
    ) -> ReleaseDecision:
        model = TrainedModel(
            model_dir=tiny_model, run_dir=str(tmp_path), base_model=tiny_model, card_data=str(tmp_path / "none.pkl")
        )
        metrics = Metrics(
            headline="cosine_ndcg@10",
            base={"cosine_ndcg@10": 0.1},
            finetuned={"cosine_ndcg@10": score},
            evaluators=[],
            test_key=test_key,
        )
        record = RunRecord(
            recipe="tiny",
            recipe_yaml="",
            recipe_hash="0",
            model_hash="0",
            base_model_id="tiny@0",
            run_id=run_id,
            run_dir=str(tmp_path),
            data=[],
        )
        champion = measure_champion(config, EvaluateConfig(), splits, model, metrics)
        return push_model(config, model, record, metrics, decide_release(config, record, metrics, champion))

    return push


def test_one_commit_with_model_card_and_meta_and_no_token_anywhere(recipe_dict, hub, tmp_path):
    result = finetune(recipe=_hub_recipe(recipe_dict, hub), output_dir=str(tmp_path / "runs"))
    assert result.push.pushed and result.push.reason == "first release"
    repo = hub.state.repos["acme/tiny-model"]
    assert repo.private
    commits = repo.branches["main"]
    assert len(commits) == 1
    files = commits[0]["files"]
    assert {
        "README.md",
        "training_meta.json",
        "model.safetensors",
        "modules.json",
        "config_sentence_transformers.json",
    } <= set(files)
    meta = json.loads(files["training_meta.json"])
    assert meta["recipe"] == "tiny-test" and meta["headline"] == result.headline and len(meta["recipe_hash"]) == 16
    assert meta["data_fingerprint"]["tiny_validation"] and meta["metrics"][meta["headline"]] == result.finetuned
    run_id = Path(result.run_dir).name
    assert commits[0]["message"] == f"embedforge tiny-test run {run_id}: {result.headline} = {result.finetuned:.4f}"
    assert list(repo.tags) == [f"tiny-test-{run_id}"]
    assert [r["path"] for r in hub.state.requests if "/commit/" in r["path"]] == [
        "/api/models/acme/tiny-model/commit/main"
    ]

    # The token went only where it belongs, the Authorization header; never into a payload, file, log or artifact.
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in hub.state.requests if r["method"] == "POST")
    assert TOKEN.encode() not in hub.state.payloads()
    for path in Path(result.run_dir).rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(meta["flow_run_id"])
        logs = client.read_logs()
        assert logs and not any(TOKEN in log.message for log in logs)
        assert not any(TOKEN in json.dumps(a.data) for a in client.read_artifacts())
        assert flow_run.state.is_completed()

    # The same inputs again: only training_meta.json is read from the Hub, nothing trained or uploaded.
    hub.state.requests.clear()
    again = finetune(recipe=_hub_recipe(recipe_dict, hub), output_dir=str(tmp_path / "runs"))
    assert again.up_to_date.release == f"tiny-test-{run_id}" and again.up_to_date.location == "acme/tiny-model"
    assert [r["path"] for r in hub.state.requests if r["method"] == "GET" and "/resolve/" in r["path"]] == [
        "/acme/tiny-model/resolve/main/training_meta.json"
    ]
    assert not [r for r in hub.state.requests if r["method"] == "POST"] and len(repo.branches["main"]) == 1


def test_retries_after_server_errors_then_succeeds(release, hub):
    hub.state.fail(r"/commit/", 500, 503)
    result = release(PushConfig(repo_id="acme/m", endpoint=hub.url, retries=3, retry_delay_seconds=0))
    assert result.pushed
    assert len([r for r in hub.state.requests if "/commit/" in r["path"]]) == 3
    assert len(hub.state.commits("acme/m")) == 1


def test_server_errors_beyond_the_recipes_retries_end_in_one_line(release, hub):
    hub.state.fail(r"/commit/", 503, 503, 503)
    with pytest.raises(EmbedforgeError, match=r"push: the Hub refused the request for acme/m \(HTTP 503\)"):
        release(PushConfig(repo_id="acme/m", endpoint=hub.url, retries=1, retry_delay_seconds=0))
    assert len([r for r in hub.state.requests if "/commit/" in r["path"]]) == 2  # the first try and one retry
    assert hub.state.commits("acme/m") == []


def test_unauthorized_fails_at_once_with_a_clear_message(recipe_dict, hub, tmp_path):
    hub.state.write_status = 401
    with pytest.raises(
        EmbedforgeError, match=r"push: token lacks write access to acme/tiny-model \(HTTP 401\)"
    ) as error:
        finetune(recipe=_hub_recipe(recipe_dict, hub, retries=3), output_dir=str(tmp_path / "runs"))
    assert TOKEN not in str(error.value)
    assert len([r for r in hub.state.requests if r["path"] == "/api/repos/create"]) == 1  # no retry
    model_dir = next((tmp_path / "runs" / "tiny-test").glob("*/model"))
    assert (model_dir / "README.md").exists() and (model_dir / "model.safetensors").exists()


def test_forbidden_is_not_retried_either(release, hub):
    hub.state.write_status = 403
    with pytest.raises(EmbedforgeError, match=r"token lacks write access to acme/m \(HTTP 403\)"):
        release(PushConfig(repo_id="acme/m", endpoint=hub.url, retries=3, retry_delay_seconds=0))
    assert len([r for r in hub.state.requests if r["path"] == "/api/repos/create"]) == 1


def test_worse_model_is_not_pushed_and_better_one_is(recipe_dict, hub, tmp_path):
    good = finetune(recipe=_hub_recipe(dict(recipe_dict), hub), output_dir=str(tmp_path / "runs"))
    assert good.push.pushed

    # A learning rate this small leaves the weights where they started: a worse model than the published one.
    recipe_dict["train"]["args"]["learning_rate"] = 1e-12
    worse = finetune(recipe=_hub_recipe(recipe_dict, hub), output_dir=str(tmp_path / "runs"))
    push = worse.push
    assert not push.pushed and push.champion == pytest.approx(good.finetuned, abs=1e-6)
    assert push.challenger == worse.finetuned < push.champion
    assert "kept the published model" in push.reason
    assert len(hub.state.commits("acme/tiny-model")) == 1
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tiny-test-push"]))
        )
        latest = max(artifacts, key=lambda a: a.created)
        assert (
            "Not published" in latest.data
            and f"{push.champion:.4f}" in latest.data
            and f"{push.challenger:.4f}" in latest.data
        )

    forced = finetune(
        recipe=_hub_recipe(recipe_dict, hub, require_improvement=False), output_dir=str(tmp_path / "runs")
    )
    assert forced.push.pushed and len(hub.state.commits("acme/tiny-model")) == 2

    recipe_dict["train"]["args"]["learning_rate"] = 5e-4
    recipe_dict["train"]["args"]["num_train_epochs"] = 5
    better = finetune(recipe=_hub_recipe(recipe_dict, hub), output_dir=str(tmp_path / "runs"))
    assert better.push.pushed and better.finetuned >= better.push.champion
    assert len(hub.state.commits("acme/tiny-model")) == 3


def test_branch_and_private_flag(release, hub):
    config = PushConfig(
        repo_id="m", organization="acme", endpoint=hub.url, revision="staging", private=False, tag_releases=False
    )
    release(config)
    repo = hub.state.repos["acme/m"]
    assert not repo.private and len(repo.branches["staging"]) == 1 and repo.branches["main"] == [] and not repo.tags


def test_local_target_keeps_every_release_and_points_latest_at_the_newest(release, tmp_path):
    config = PushConfig(local_dir=str(tmp_path / "published"), require_improvement=False)
    first = release(config, "rel-1", 0.5)
    second = release(config, "rel-2", 0.6)
    root = tmp_path / "published"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "tiny-rel-1", "tiny-rel-2"]
    assert (root / "latest").resolve() == Path(second.location).resolve() == (root / "tiny-rel-2").resolve()
    assert json.loads((root / "tiny-rel-1" / "training_meta.json").read_text())["metrics"]["cosine_ndcg@10"] == 0.5
    assert (root / "latest" / "modules.json").exists() and Path(first.location).exists()
    # The second release measured the first one on its own test split before replacing it.
    assert second.champion is not None and (tmp_path / "champion-metrics.json").exists()


def test_a_release_measured_on_the_same_test_split_is_compared_by_its_figures(release, hub):
    config = PushConfig(repo_id="m", organization="acme", endpoint=hub.url)
    release(config, "rel-1", 0.5, test_key="split-a")
    hub.state.requests.clear()
    same = release(config, "rel-2", 0.4, test_key="split-a")
    assert not same.pushed and same.champion == 0.5
    downloads = [r["path"] for r in hub.state.requests if r["method"] == "GET" and "/resolve/" in r["path"]]
    assert downloads == ["/acme/m/resolve/main/training_meta.json"]  # the figures only, not the model

    # Another test split (new data, other evaluator settings): the published model is downloaded and measured on it.
    hub.state.requests.clear()
    other = release(config, "rel-3", 0.4, test_key="split-b")
    assert other.champion is not None and other.champion != 0.5
    assert any(r["path"].endswith("/model.safetensors") for r in hub.state.requests)


def test_token_from_a_prefect_secret_block(release, hub, monkeypatch):
    from prefect.blocks.system import Secret

    monkeypatch.delenv("HF_TOKEN")
    Secret(value="hf_fromSecretBlock42").save("hub-token", overwrite=True)
    release(PushConfig(repo_id="acme/m", endpoint=hub.url, token_secret="hub-token"))
    assert {r["auth"] for r in hub.state.requests if r["method"] == "POST"} == {"Bearer hf_fromSecretBlock42"}
    with pytest.raises(EmbedforgeError, match="push.token_secret: no Prefect Secret block named 'missing'"):
        release(PushConfig(repo_id="acme/m", endpoint=hub.url, token_secret="missing"), "rel-2")


def test_a_failed_push_is_published_by_resume_without_training_again(recipe_dict, hub, tmp_path, write_recipe, caplog):
    recipe_dict["push"] = {"repo_id": "acme/tiny-model", "endpoint": hub.url, "retries": 1, "retry_delay_seconds": 0}
    hub.state.fail(r"/commit/", 503, 503)  # the upload and its one retry
    failed = run_cli(write_recipe(recipe_dict), tmp_path / "runs")
    assert failed.exit_code == 1 and "push: the Hub refused the request for acme/tiny-model (HTTP 503)" in failed.output
    (run_dir,) = (tmp_path / "runs" / "tiny-test").iterdir()
    assert hub.state.commits("acme/tiny-model") == [] and (run_dir / "model" / "model.safetensors").exists()

    caplog.clear()
    resumed = cli("resume", run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert f"Push: published to {hub.url}/acme/tiny-model/commit/" in resumed.output
    assert len(hub.state.commits("acme/tiny-model")) == 1
    assert "already holds this run's trained model; not training again" in caplog.text
    assert "Training started" not in caplog.text


def _tree_digest(root: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else str(p.readlink())
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


def test_a_published_release_is_never_rewritten(release, tmp_path):
    config = PushConfig(local_dir=str(tmp_path / "published"), require_improvement=False)
    release(config, "rel-1", 0.5)
    before = _tree_digest(tmp_path / "published")
    again = release(config, "rel-1", 0.7)  # the same run pushed again, with other figures
    assert again.already and again.location == str(tmp_path / "published" / "tiny-rel-1")
    assert "already published" in again.reason and _tree_digest(tmp_path / "published") == before


def test_keep_last_removes_the_oldest_local_releases_but_never_the_live_one(release, tmp_path):
    config = PushConfig(local_dir=str(tmp_path / "published"), keep_last=2, require_improvement=False)
    for number, score in enumerate([0.5, 0.6, 0.7], start=1):
        release(config, f"rel-{number}", score)
    root = tmp_path / "published"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "tiny-rel-2", "tiny-rel-3"]
    assert (root / "latest").resolve() == (root / "tiny-rel-3").resolve()
    with pytest.raises(ValueError, match="keep_last applies to a local_dir target"):
        PushConfig(repo_id="acme/m", keep_last=2)


@pytest.mark.slow  # runs embedforge end to end
def test_resume_of_a_published_run_changes_no_byte_of_any_release(recipe_dict, tmp_path, write_recipe):
    first = run_cli(write_recipe(recipe_dict), tmp_path / "runs")
    assert first.exit_code == 0, first.output
    (run_dir,) = (tmp_path / "runs" / "tiny-test").iterdir()
    before = _tree_digest(tmp_path / "published")
    resumed = cli("resume", run_dir)
    assert resumed.exit_code == 0, resumed.output
    assert f"release tiny-test-{run_dir.name} was already published at" in resumed.output
    assert _tree_digest(tmp_path / "published") == before


@pytest.mark.slow  # runs embedforge end to end
def test_resume_of_an_edited_run_directory_or_changed_data_is_refused(recipe_dict, tmp_path, write_recipe):
    recipe_dict["push"]["require_improvement"] = False  # a resumed run would publish whatever it made
    first = run_cli(write_recipe(recipe_dict), tmp_path / "runs")
    assert first.exit_code == 0, first.output
    (run_dir,) = (tmp_path / "runs" / "tiny-test").iterdir()
    before = _tree_digest(tmp_path / "published")

    saved = run_dir / "recipe.yaml"
    original = saved.read_text()
    saved.write_text(original.replace("learning_rate: 0.0005", "learning_rate: 0.001"))
    edited = cli("resume", run_dir)
    assert edited.exit_code == 1 and edited.output.strip().startswith(
        f"{run_dir}: its recipe.yaml changed since this run started"
    ), edited.output
    assert "Start a new run: `embedforge run <recipe>`" in edited.output

    # New data under the same path, resumed on another machine (its own Prefect home and result cache: on this
    # one the cached ingest hands the run the data it trained on).
    saved.write_text(original)
    rows = make_pairs()
    rows[0]["context"] += " Changed after the run."
    write_jsonl(Path(recipe_dict["ingest"]["path"]), rows)
    other = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home(tmp_path / "other-home")),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "other-results"),
    }
    other.pop("PREFECT_API_URL", None)
    new_data = subprocess.run(
        [str(Path(sys.executable).parent / "embedforge"), "resume", str(run_dir)],
        env=other,
        capture_output=True,
        text=True,
    )
    assert new_data.returncode == 1, new_data.stdout[-2000:] + new_data.stderr[-2000:]
    assert f"{run_dir}: its data (tiny_validation) changed since this run started" in new_data.stderr
    assert _tree_digest(tmp_path / "published") == before


def test_a_hub_that_cannot_be_reached_or_never_answers_is_one_line(monkeypatch, tmp_path):
    """huggingface_hub's client has no timeout of its own: a silent Hub must fail, not hold the run forever."""
    import socket
    import time

    from embedforge.checks.push import check_target
    from embedforge.hub import with_timeouts

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    ((field, problem),) = check_target(PushConfig(repo_id="acme/m", endpoint=f"http://127.0.0.1:{port}"))
    assert field == "push.endpoint" and problem.startswith(f"the Hub at http://127.0.0.1:{port} cannot be reached")

    with_timeouts()
    from huggingface_hub.utils import get_session

    monkeypatch.setattr(get_session().timeout, "read", 1.0)  # the same client, a shorter wait for the test
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # takes the connection, never answers
        started = time.monotonic()
        ((field, problem),) = check_target(
            PushConfig(repo_id="acme/m", endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}")
        )
    assert field == "push.endpoint" and "cannot be reached" in problem and time.monotonic() - started < 30
