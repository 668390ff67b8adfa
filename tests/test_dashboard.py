"""The Prefect dashboard as a person sees it: the real server and UI (`prefect server start`), headless Chromium.

Needs Debian's chromium (`apt-get install -y chromium`; .ci/run installs it) and the playwright package.
Screenshots land in the test's folder, or in $EMBEDFORGE_SCREENSHOTS (the README's come from docs/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, flow_runs, live_api, live_cli, live_env, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM, reason="no chromium: install it with `apt-get install -y chromium`"),
]


@pytest.fixture(scope="module")
def server(live_server):
    return live_server


def _run_tiny(server: str, root: Path, master: Path, name: str, **sections) -> None:
    """The tiny recipe with these sections, run against the server through the CLI, as a user would."""
    import yaml

    from conftest import make_pairs, make_recipe, write_jsonl

    shutil.copytree(master, root / "model")
    data = write_jsonl(root / "pairs.jsonl", make_pairs())
    recipe = make_recipe(name, str(root / "model"), data, push={"local_dir": str(root / "published")}, **sections)
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    live_cli(server, "embedforge", "run", str(root / "recipe.yaml"), "--output-dir", str(root / "runs"))


@pytest.fixture(scope="module")
def finished_run(server, tmp_path_factory, _tiny_model_master):
    """The tiny recipe run and deployed against that server through the CLI, as a user would."""
    root = tmp_path_factory.mktemp("dash")
    deployment = {"work_pool": "dashboard-pool", "schedule": {"cron": "0 4 * * 1"}}
    _run_tiny(server, root, _tiny_model_master, "tiny-dashboard", deployment=deployment)
    live_cli(server, "prefect", "work-pool", "create", "dashboard-pool", "--type", "process")
    live_cli(server, "embedforge", "deploy", str(root / "recipe.yaml"))
    meta = json.loads((root / "published" / "latest" / "training_meta.json").read_text())
    # A retrain the quality gate refuses: exit 1 on the command line, a "Rejected" run in the dashboard.
    rejected = subprocess.run(
        [str(BIN / "embedforge"), "run", str(root / "recipe.yaml"), "--output-dir", str(root / "runs"), "--force"]
        + ["--set", "evaluate.gates.gain=1.0"],
        env=live_env(server),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rejected.returncode == 1 and "Rejected: quality gate failed" in rejected.stdout, rejected.stderr[-2000:]
    return meta["flow_run_id"]


@pytest.fixture(scope="module")
def page(server):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("EMBEDFORGE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _flow_runs(server: str, name_prefix: str) -> list[dict]:
    return flow_runs(server, sort="START_TIME_DESC", name={"like_": name_prefix})


def test_each_run_reads_as_what_it_decided(server, finished_run, page, shots):
    rejected, published = _flow_runs(server, "tiny-dashboard-")[:2]
    assert (published["id"], published["state_type"], published["state_name"]) == (
        finished_run,
        "COMPLETED",
        "Published",
    )
    assert (rejected["state_type"], rejected["state_name"]) == ("COMPLETED", "Rejected")  # not a red Failed
    page.goto(f"{server}/runs/flow-run/{rejected['id']}")
    page.get_by_text("Rejected").first.wait_for(timeout=30000)
    page.get_by_text("record-outcome").first.wait_for(timeout=15000)  # the decision is a node of the graph
    page.screenshot(path=str(shots / "rejected-run.png"))
    page.goto(f"{server}/runs")
    page.get_by_text(rejected["name"]).first.wait_for(timeout=30000)
    page.screenshot(path=str(shots / "runs.png"))
    for state in ("Published", "Rejected"):
        assert page.get_by_text(state, exact=True).count() >= 1, state


def test_history_and_live_release_answer_an_operator(server, finished_run, page, shots):
    page.goto(_artifact_page(server, "tiny-dashboard-history"))
    page.get_by_text("rejected", exact=True).first.wait_for(timeout=30000)
    page.screenshot(path=str(shots / "history.png"))
    for column in ["date", "run", "decision", "data", "base", "fine-tuned", "champion"]:
        assert page.get_by_text(column, exact=True).count() >= 1, column
    assert page.get_by_text("published", exact=True).count() == 1
    page.goto(_artifact_page(server, "tiny-dashboard-release"))
    page.get_by_role("heading", name=re.compile("Live release of tiny-dashboard")).wait_for(timeout=30000)
    page.screenshot(path=str(shots / "release.png"))
    # The live release is the published run's, though a later run was rejected.
    (artifact,) = live_api(
        server, "artifacts/latest/filter", {"artifacts": {"key": {"any_": ["tiny-dashboard-release"]}}}
    )
    assert artifact["flow_run_id"] == finished_run


def test_flow_run_page_shows_every_stage(server, finished_run, page, shots):
    page.goto(f"{server}/runs/flow-run/{finished_run}")
    page.get_by_text("Completed").first.wait_for(timeout=30000)
    page.get_by_text("train-model").first.wait_for(timeout=15000)  # the stage graph has drawn
    page.screenshot(path=str(shots / "flow-run.png"))
    page.get_by_text("Task Runs", exact=True).click()
    for stage in [
        "ingest-dataset",
        "check-release",
        "split-dataset",
        "train-model",
        "measure-base-model",
        "evaluate-model",
        "check-quality-gate",
        "render-model-card",
        "measure-champion",
        "decide-release",
        "push-model",
        "record-outcome",
    ]:
        page.get_by_text(stage).first.wait_for(timeout=15000)
    # The release decision is a node of its own, its verdict in its result.
    task_runs = live_api(server, "task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [finished_run]}}})
    (decide,) = [run for run in task_runs if run["task_key"].startswith("decide_release")]
    assert decide["state_type"] == "COMPLETED"


def _artifact_page(server: str, key: str) -> str:
    (artifact,) = live_api(server, "artifacts/latest/filter", {"artifacts": {"key": {"any_": [key]}}})
    return f"{server}/artifacts/artifact/{artifact['latest_id']}"


def test_gain_table_reads_base_finetuned_and_delta(server, finished_run, page, shots):
    page.goto(_artifact_page(server, "tiny-dashboard-gain"))
    page.get_by_text("tiny_validation_cosine_ndcg@10", exact=True).wait_for(timeout=30000)
    # The latest gain table is the rejected run's, and says so.
    page.get_by_text(re.compile("REJECTED by the quality gate")).first.wait_for(timeout=15000)
    page.get_by_text("delta 95 % CI", exact=True).first.wait_for(timeout=15000)
    page.screenshot(path=str(shots / "gain-table.png"))
    for column in ["metric", "base", "fine-tuned", "delta", "BM25", "hybrid"]:
        assert page.get_by_text(column, exact=True).count() >= 1, column
    assert page.get_by_text(re.compile(r"^\[[+-]0\.\d{4}, [+-]0\.\d{4}\]$")).count() == 1  # the headline's row
    # About 30 test queries: the figures carry an interval, and the artifact says they cannot tell small differences.
    (artifact,) = live_api(server, "artifacts/latest/filter", {"artifacts": {"key": {"any_": ["tiny-dashboard-gain"]}}})
    assert re.search(r"the test split is (too small to tell|small): over \d+ queries", artifact["description"])


@pytest.fixture(scope="module")
def rerank_run(server, tmp_path_factory, _tiny_model_master):
    """The tiny recipe with a reranker beside the embedder (its gate set below anything, so it is published)."""
    root = tmp_path_factory.mktemp("dash-rerank")
    rerank = {"base_model": str(root / "model"), "top_k": 10, "gates": {"over_embedder": -1.0}}
    split = {"eval_size": 0.1, "test_size": 0.25, "seed": 7}
    _run_tiny(server, root, _tiny_model_master, "tiny-dashboard-rerank", split=split, rerank=rerank)
    return json.loads((root / "published" / "latest" / "training_meta.json").read_text())["flow_run_id"]


def test_a_rerank_run_shows_its_stages_and_the_two_stage_table(server, rerank_run, page, shots):
    page.goto(f"{server}/runs/flow-run/{rerank_run}")
    page.get_by_text("train-reranker").first.wait_for(timeout=30000)  # the stage graph has drawn
    page.screenshot(path=str(shots / "rerank-flow-run.png"))
    page.get_by_text("Task Runs", exact=True).click()
    for stage in ["train-reranker", "evaluate-reranker", "check-reranker-gate", "render-reranker-card"]:
        page.get_by_text(stage).first.wait_for(timeout=15000)
    page.goto(_artifact_page(server, "tiny-dashboard-rerank-rerank"))
    page.get_by_text("embedder + fine-tuned reranker", exact=True).first.wait_for(timeout=30000)
    page.screenshot(path=str(shots / "rerank.png"))
    for stage in ["embedder alone", "embedder + base reranker"]:
        assert page.get_by_text(stage, exact=True).count() == 1, stage
    assert page.get_by_text(re.compile(r"ms on CPU")).count() >= 1


@pytest.fixture(scope="module")
def corpus_run(server, tmp_path_factory, _tiny_model_master):
    """Pages turned into pairs, most of them shorter than the filter keeps: the warning says which filter and why."""
    import yaml

    from conftest import make_recipe

    root = tmp_path_factory.mktemp("dash-docs")
    shutil.copytree(_tiny_model_master, root / "model")
    (root / "docs").mkdir()
    for topic in ["castle", "river", "engine", "garden", "harbor", "market", "temple", "forest"]:
        sections = [
            f"## {part.title()}\n\nThe {topic} {part} is described here. Visitors of the {topic} note its {part}. "
            f"Every {part} of a {topic} has a keeper. The keeper of the {topic} {part} writes a ledger."
            for part in ("history", "layout", "custom")
        ]
        (root / "docs" / f"{topic}.md").write_text(f"# The {topic}\n\n" + "\n\n".join(sections) + "\n")
    recipe = make_recipe("tiny-dashboard-docs", str(root / "model"), root / "docs", push={})
    recipe["ingest"] = {"name": "docs"}
    recipe["split"] = {"eval_size": 0.0, "test_size": 0.3, "seed": 3}
    recipe["corpus"] = {
        "path": str(root / "docs"),
        "chunk_tokens": 48,
        "overlap": 8,
        "min_chunk_tokens": 8,
        "generate": {"method": "inverse_cloze", "queries_per_chunk": 2},
        # Most of the sentences made queries are 35 to 38 characters long: only the longest quarter is kept.
        "filter": {"min_query_chars": 39, "round_trip_k": 50, "round_trip_model": "base"},
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    live_cli(server, "embedforge", "run", str(root / "recipe.yaml"), "--output-dir", str(root / "runs"))


def test_a_corpus_run_shows_the_filter_warning_and_how_far_each_stage_got(server, corpus_run, page, shots):
    page.goto(_artifact_page(server, "tiny-dashboard-docs-generation"))
    page.get_by_text(re.compile("generated pairs kept: length dropped")).first.wait_for(timeout=30000)
    page.get_by_text(re.compile("change corpus.filter.min_query_chars")).first.wait_for(timeout=15000)
    page.screenshot(path=str(shots / "generation-warning.png"))
    (run,) = _flow_runs(server, "tiny-dashboard-docs-")[:1]
    progress = {
        a["description"]: a
        for a in live_api(server, "artifacts/filter", {"artifacts": {"type": {"any_": ["progress"]}}})
        if a["flow_run_id"] == run["id"]
    }
    stages = {description.split(":")[0] for description in progress}
    assert {"chunk", "filter (round trip, encoding)"} <= stages, stages
    (filtered,) = [a for d, a in progress.items() if d.startswith("filter (round trip, encoding)")]
    assert filtered["data"] == 100.0
    page.goto(f"{server}/artifacts/artifact/{filtered['id']}")
    page.get_by_text("100%").first.wait_for(timeout=30000)
    page.screenshot(path=str(shots / "filter-progress.png"))
    # generate runs as a subflow of its own: its progress, counted in chunks, is that flow run's artifact.
    subflows = live_api(server, "flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})
    everything = live_api(server, "artifacts/filter", {"artifacts": {"type": {"any_": ["progress"]}}})
    (generated,) = [
        a
        for a in everything
        if a["description"] == "generate: chunks done (%)" and a["flow_run_id"] in {f["id"] for f in subflows}
    ]
    assert generated["data"] == 100.0
    page.goto(f"{server}/artifacts/artifact/{generated['id']}")
    page.get_by_text("100%").first.wait_for(timeout=30000)
    page.screenshot(path=str(shots / "generation-progress.png"))


def test_model_card_renders_as_on_the_hub(server, finished_run, page, shots):
    page.goto(_artifact_page(server, "tiny-dashboard-model-card"))
    page.get_by_role("heading", name="Fine-tuning Report").wait_for(timeout=30000)
    page.screenshot(path=str(shots / "model-card.png"))
    text = page.inner_text("body")
    # The front matter is a small table, not YAML dumped as bullet points.
    assert "apache-2.0" not in text or "license" in text
    assert "source_sentence" not in text and "widget:" not in text and "model-index" not in text
    assert page.get_by_text("library_name", exact=True).count() == 1
    assert page.get_by_role("heading", name="Gain over the Base Model").count() == 1


def test_training_progress_reached_100_percent(server, finished_run, page, shots):
    (progress,) = [
        a
        for a in live_api(server, "artifacts/filter", {"artifacts": {"type": {"any_": ["progress"]}}})
        if a["flow_run_id"] == finished_run
    ]
    assert progress["data"] == 100.0
    page.goto(f"{server}/artifacts/artifact/{progress['id']}")
    page.get_by_text("100%").first.wait_for(timeout=30000)
    page.screenshot(path=str(shots / "training-progress.png"))


def test_deployment_shows_its_schedule(server, finished_run, page, shots):
    (deployment,) = live_api(server, "deployments/filter", {"deployments": {"name": {"any_": ["tiny-dashboard"]}}})
    page.goto(f"{server}/deployments/deployment/{deployment['id']}")
    page.get_by_text("tiny-dashboard").first.wait_for(timeout=30000)
    page.get_by_text("dashboard-pool").first.wait_for(timeout=15000)
    page.get_by_text("At 04:00 AM, only on Monday").wait_for(timeout=15000)
    page.screenshot(path=str(shots / "deployment.png"))
    # The scheduler has made the next runs: the Upcoming tab lists them.
    page.get_by_text("Upcoming", exact=True).click()
    page.get_by_text("Scheduled").first.wait_for(timeout=60000)
    page.screenshot(path=str(shots / "deployment-upcoming.png"))


def test_the_run_is_recorded_whole_when_the_command_returns(server, finished_run):
    """`embedforge run` exits without the interpreter's teardown; its last logs and task states still arrive."""
    logs = live_api(
        server, "logs/filter", {"logs": {"flow_run_id": {"any_": [finished_run]}}, "sort": "TIMESTAMP_DESC"}
    )
    # The flow run's own last line, logged a moment before the command returns (a task's would not do).
    flow_lines = [log["message"] for log in logs if log["task_run_id"] is None]
    assert flow_lines and flow_lines[0].startswith("Finished in state Published("), flow_lines[:3]
    task_runs = live_api(server, "task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [finished_run]}}})
    states = {run["name"].rsplit("-", 1)[0]: run["state_type"] for run in task_runs}
    assert states.get("push-model") == "COMPLETED" and set(states.values()) == {"COMPLETED"}, states


def _waiting_release(server: str, root: Path, master: Path, name: str, timeout: int = 900) -> subprocess.Popen:
    """`embedforge run` of the tiny recipe with `push.approval: required`, left running: it will pause for a person."""
    import yaml

    from conftest import make_pairs, make_recipe, write_jsonl

    shutil.copytree(master, root / "model")
    data = write_jsonl(root / "pairs.jsonl", make_pairs())
    push = {"local_dir": str(root / "published"), "approval": "required", "approval_timeout": timeout}
    (root / "recipe.yaml").write_text(yaml.safe_dump(make_recipe(name, str(root / "model"), data, push=push)))
    command = [str(BIN / "embedforge"), "run", str(root / "recipe.yaml"), "--output-dir", str(root / "runs")]
    return subprocess.Popen(command, env=live_env(server), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _paused(server: str, name: str, run: subprocess.Popen) -> tuple[dict, str]:
    """The paused flow run, and the link the run's log gives the operator to it."""
    for line in run.stdout:
        if "waits for approval in the Prefect dashboard: " in line:
            link = line.split("waits for approval in the Prefect dashboard: ")[1].strip()
            break
    else:
        raise AssertionError(f"{name} ended without waiting for approval")
    paused = wait_for(
        lambda: [r for r in _flow_runs(server, f"{name}-") if r["state_type"] == "PAUSED"], 60, f"{name} paused"
    )
    return paused[0], link


@pytest.fixture(scope="module")
def waiting_releases(server, tmp_path_factory, _tiny_model_master):
    """Three releases waiting for a person at once: one to approve, one to reject, one nobody answers (20 s)."""
    roots = {name: tmp_path_factory.mktemp(name) for name in ("tiny-approve", "tiny-reject", "tiny-unanswered")}
    runs = {
        name: _waiting_release(server, root, _tiny_model_master, name, 20 if name == "tiny-unanswered" else 900)
        for name, root in roots.items()
    }
    yield {name: (roots[name], runs[name], *_paused(server, name, runs[name])) for name in runs}
    for run in runs.values():
        run.kill()


def _answer(page, link: str, approve: bool, name: str, reason: str, shot: Path | None) -> None:
    """What an operator does: open the link the run gave, Resume, fill in the form, Submit."""
    page.goto(link)
    page.get_by_role("button", name="Resume").first.click()
    page.get_by_text("Approve or reject this release.").wait_for(timeout=30000)
    form = page.locator(".p-modal")
    if approve:
        form.get_by_role("switch").first.click()
    # The form's fields in the order ApprovalForm declares them; its labels point at no input id.
    assert form.get_by_text("Your name: kept with the release").count() == 1
    form.locator("textarea").nth(0).fill(name)
    form.locator("textarea").nth(1).fill(reason)
    if shot:
        page.screenshot(path=str(shot))
    page.get_by_role("button", name="Submit").click()


def test_an_operator_approves_a_waiting_release_in_the_dashboard_and_it_publishes(
    server, waiting_releases, page, shots
):
    root, run, flow_run, link = waiting_releases["tiny-approve"]
    assert not (root / "published").exists()  # nothing out while it waits
    page.goto(link)  # the run's log line, as the operator would follow it
    page.get_by_text(flow_run["name"]).first.wait_for(timeout=30000)
    page.get_by_text("Paused").first.wait_for(timeout=30000)
    page.get_by_text("decide-release").first.wait_for(timeout=30000)  # the stage graph has drawn
    page.screenshot(path=str(shots / "approval-waiting.png"))
    _answer(page, link, True, "Ana Ops", "gain checked against last week's queries", shots / "approval-form.png")
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0 and "Push: published to" in out, out[-3000:]
    card = (root / "published" / "latest" / "README.md").read_text()
    assert "## Approval" in card and "**Approved** by Ana Ops on " in card
    assert "gain checked against last week's queries" in card
    (done,) = _flow_runs(server, "tiny-approve-")
    assert done["state_name"] == "Published"
    (history,) = live_api(server, "artifacts/latest/filter", {"artifacts": {"key": {"any_": ["tiny-approve-history"]}}})
    row = json.loads(history["data"])[0]
    assert row["decision"] == "published" and row["reason"].endswith(
        "approved by Ana Ops: gain checked against last week's queries"
    )


def test_an_operator_rejects_a_waiting_release_and_nothing_is_published(server, waiting_releases, page, shots):
    root, run, flow_run, link = waiting_releases["tiny-reject"]
    _answer(page, link, False, "Bo Review", "not before the holiday freeze ends", None)
    out, _ = run.communicate(timeout=300)
    reason = "not approved by Bo Review: not before the holiday freeze ends"
    assert run.returncode == 1 and f"Rejected: {reason}; nothing was published" in out, out[-3000:]
    assert not (root / "published").exists()
    (model_card,) = (root / "runs" / "tiny-reject").glob("*/model/README.md")  # the model stays, with the answer
    assert "**Rejected** by Bo Review" in model_card.read_text()
    (done,) = _flow_runs(server, "tiny-reject-")
    assert (done["state_type"], done["state_name"]) == ("COMPLETED", "Rejected")
    page.goto(f"{server}/runs/flow-run/{done['id']}")
    page.get_by_text("Rejected").first.wait_for(timeout=30000)
    page.get_by_text("record-approval").first.wait_for(timeout=30000)  # the stage graph has drawn
    page.screenshot(path=str(shots / "approval-rejected.png"))
    body = {
        "filter": {
            "event": {"name": ["embedforge.model.rejected"]},
            "any_resource": {"id": ["embedforge.recipe.tiny-reject"]},
        }
    }
    # Events reach the server's event store a moment after the run ends.
    (event,) = wait_for(lambda: live_api(server, "events/filter", body)["events"], 30, "the outcome event")
    assert event["payload"]["reason"] == reason


def test_a_release_nobody_approves_in_time_is_rejected(server, waiting_releases):
    root, run, _, _ = waiting_releases["tiny-unanswered"]
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 1, out[-3000:]
    assert "Rejected: not approved in time: no answer within 20 s; nothing was published" in out
    assert not (root / "published").exists()
    (done,) = _flow_runs(server, "tiny-unanswered-")
    assert done["state_name"] == "Rejected"
