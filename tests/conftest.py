"""Shared fixtures: one real Prefect server per session, one tiny model built here and copied per test."""

from __future__ import annotations

import atexit
import functools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before prefect and huggingface_hub read their settings: no Hub, and cached task results in a
# fresh folder, because the harness keeps $PREFECT_HOME/storage and cache hits would leak across sessions.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = tempfile.mkdtemp(prefix="embedforge-results-")
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ.pop("HF_TOKEN", None)

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

WORDS = (
    "amber basil cedar delta ember fjord garnet harbor iris juniper kelp lotus maple nectar onyx pebble quartz "
    "raven sable thistle umber violet willow xenon yarrow zephyr"
).split()
TOPICS = (
    "castle",
    "river",
    "engine",
    "garden",
    "comet",
    "library",
    "forest",
    "market",
    "violin",
    "glacier",
    "harbor",
    "desert",
)


def make_pairs(n: int = 120, seed: int = 0) -> list[dict]:
    """Question/passage pairs where a passage answers exactly one question: learnable by a tiny model in seconds."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic, a, b = TOPICS[i % len(TOPICS)], rng.choice(WORDS), rng.choice(WORDS)
        key = f"{topic}{i}"
        rows.append(
            {
                "question": f"what is known about the {a} {key}?",
                "context": f"The {key} is {b} and {a}; people visit the {topic} {key} for its {b} colour.",
                "topic": topic,
            }
        )
    return rows


def general_pairs(n: int = 60, seed: int = 9) -> list[dict]:
    """Pairs outside the tiny domain, for a general set: other questions, whose passages lack the words the domain's
    passages open with. No text is one of the domain's, as a general set's must not be."""
    return [
        {
            "question": "what do people say of the " + p["question"].removeprefix("what is known about the "),
            "context": " ".join(p["context"].split()[2:]),
        }
        for p in make_pairs(n, seed)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _build_tiny_model(folder: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    corpus = [r["question"] + " " + r["context"] for r in make_pairs(400, seed=1)]
    corpus += ["a man is playing a guitar", "a woman is slicing an onion", "the cat sleeps on the sofa"]
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(corpus, vocab_size=600, min_frequency=1)
    hf_dir = folder / "hf"
    hf_dir.mkdir(parents=True)
    BertTokenizerFast(tokenizer_object=wordpiece._tokenizer, model_max_length=64).save_pretrained(hf_dir)
    config = BertConfig(
        vocab_size=wordpiece.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")])
    model.save(str(folder / "model"))
    shutil.rmtree(hf_dir)


def pytest_collection_modifyitems(items):
    # What needs the Prefect server runs flows or tasks end to end: that is the slow part of the suite,
    # and `pytest -m "not slow"` leaves it out.
    for item in items:
        if "prefect_server" in item.fixturenames:
            item.add_marker(pytest.mark.slow)
    # The slow tests first: the workers share the files out in this order, and the files of fast tests
    # are what fills the end, instead of one worker finishing a long file while the other waits.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is pid (read from /proc, so nothing to install)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.cache
def _migrated_database() -> Path:
    """A SQLite Prefect database with every migration applied, made once per session. A server on an empty
    home spends some ten seconds migrating before it answers, and no test but one is about that: the CLI
    test of test_flow.py keeps a home of its own, as a first run on a fresh install has."""
    home = Path(tempfile.mkdtemp(prefix="embedforge-prefect-db-"))
    atexit.register(shutil.rmtree, home, True)
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    subprocess.run(
        [str(BIN / "prefect"), "server", "database", "upgrade", "-y"], env=env, check=True, capture_output=True
    )
    return home / "prefect.db"


def prefect_home(path: Path) -> Path:
    """A Prefect home at path whose database is already migrated (a copy, so each test has its own)."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "prefect.db").exists():
        shutil.copyfile(_migrated_database(), path / "prefect.db")
    return path


def start_prefect_server(home: Path, **settings: str) -> tuple[subprocess.Popen, str]:
    """`prefect server start`, the command the README gives, with its services (scheduler, triggers), on a free
    port with its own home; `settings` are extra PREFECT_* variables (a PostgreSQL database URL, say)."""
    import httpx

    if not any(key.endswith("DATABASE_CONNECTION_URL") for key in settings):
        prefect_home(home)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # The UI asks the API at PREFECT_UI_API_URL, which would otherwise say the default port 4200.
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": f"{url}/api",
        **settings,
    }
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=open(home / "server.log", "w"),
        stderr=subprocess.STDOUT,
    )
    for _ in range(120):
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(1)
    process.kill()
    raise AssertionError(
        f"prefect server start did not answer within 120 s: {(home / 'server.log').read_text()[-2000:]}"
    )


def stop(process: subprocess.Popen, seconds: float = 60) -> None:
    """Terminate a server or worker; one slow to shut down is killed (its shutdown is not what tests are about)."""
    process.terminate()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """A real `prefect server start`: UI, scheduler, events and automations (the harness has none of these
    services). Yields its URL; the API is at <url>/api."""
    process, url = start_prefect_server(tmp_path_factory.mktemp("prefect-home"))
    yield url
    stop(process, 30)


def embedded_env(tmp_path: Path, fresh: bool = False) -> dict:
    """The environment of `embedforge run` as the README has it: no server set, so its own temporary one,
    with a Prefect home of its own in tmp_path (its database migrated already unless `fresh`)."""
    home = tmp_path / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(home if fresh else prefect_home(home)), "HF_HUB_OFFLINE": "1"}
    env.pop("PREFECT_API_URL", None)
    return env


def live_env(server: str, **extra: str) -> dict:
    """The environment of a command an operator runs against that server."""
    return {**os.environ, "PREFECT_API_URL": f"{server}/api", "HF_HUB_OFFLINE": "1", **extra}


def live_cli(server: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """Run `embedforge ...` or `prefect ...` from this environment's bin against the server."""
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=live_env(server), capture_output=True, text=True, timeout=600
    )
    if ok:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def live_api(server: str, path: str, body: dict | None = None):
    """One call of the server's REST API: GET without a body, POST with one."""
    import httpx

    if body is None:
        return httpx.get(f"{server}/api/{path}", timeout=10).json()
    return httpx.post(f"{server}/api/{path}", json=body, timeout=10).json()


def flow_runs(server: str, scheduled: bool = False, sort: str | None = None, **match) -> list[dict]:
    """The server's flow runs matching a flow_runs filter (e.g. name={"like_": "tiny-"}).

    The scheduler's upcoming runs are left out, or only they are kept with scheduled=True.
    """
    body = {"flow_runs": match} | ({"sort": sort} if sort else {})
    return [run for run in live_api(server, "flow_runs/filter", body) if run["auto_scheduled"] == scheduled]


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """The checkpoints saved whole (the trainer writes trainer_state.json last), oldest first."""
    found = [p for p in checkpoints.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def trainer_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "trainer_state.json").read_text())


def cli(*args):
    """`embedforge ...` in this process (typer's runner): its exit code and output, for one command."""
    from typer.testing import CliRunner

    from embedforge.cli.main import app

    return CliRunner().invoke(app, [str(arg) for arg in args])


def run_cli(recipe: Path, runs: Path, *extra):
    """`embedforge run <recipe> --output-dir <runs>` in this process."""
    return cli("run", recipe, "--output-dir", runs, *extra)


def start_worker(server: str, pool: str, log: Path, limit: int = 1, **extra: str) -> subprocess.Popen:
    """A process worker on `pool` running at most `limit` flow runs at once, polling every 2 s, its output in `log`."""
    env = live_env(server, PREFECT_WORKER_QUERY_SECONDS="2", **extra)
    command = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--limit", str(limit)]
    with open(log, "w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for(condition, seconds: float, what: str):
    """condition()'s first truthy value within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@pytest.fixture(scope="session")
def _tiny_model_master(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    _build_tiny_model(folder)
    return folder / "model"


@pytest.fixture
def tiny_model(_tiny_model_master, tmp_path) -> str:
    """A fresh copy of the tiny random-init BERT sentence-transformer, so a test can't change another's."""
    target = tmp_path / "tiny-model"
    shutil.copytree(_tiny_model_master, target)
    return str(target)


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "data" / "pairs.jsonl", make_pairs())


def make_recipe(name: str, base_model: str, data: Path, **sections) -> dict:
    """A recipe on the tiny model that trains in seconds: three epochs that move its metrics.

    Sections given replace the defaults below; ``train_args`` is merged into train.args.
    """
    args = {
        "num_train_epochs": 3,
        "per_device_train_batch_size": 16,
        "learning_rate": 5e-4,
        "save_strategy": "no",
        "disable_tqdm": True,
        "use_cpu": True,
        **sections.pop("train_args", {}),
    }
    return {
        "name": name,
        "ingest": {
            "name": "tiny_validation",
            "path": str(data),
            "columns": {"anchor": "question", "positive": "context"},
        },
        "train": {"base_model": base_model, "args": args},
        **sections,
    }


@pytest.fixture
def recipe_dict(tiny_model, pairs_file, tmp_path) -> dict:
    """The tiny recipe with a topic column, a seeded split and a local push target; tests change what they test."""
    recipe = make_recipe(
        "tiny-test",
        tiny_model,
        pairs_file,
        train_args={"logging_steps": 5},
        split={"eval_size": 0.1, "test_size": 0.25, "seed": 7},
        card={"language": ["en"], "license": "apache-2.0"},
        push={"local_dir": str(tmp_path / "published")},
    )
    recipe["ingest"]["keep"] = ["topic"]
    recipe["train"]["max_seq_length"] = 64
    return recipe


@pytest.fixture
def write_recipe(tmp_path):
    def write(data: dict, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write
