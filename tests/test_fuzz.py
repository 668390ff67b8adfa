"""Kinds of bad input nobody listed, found by generation: mutated recipes and broken data files.

The invariant, whatever the mutation: embedforge either refuses with EmbedforgeError, every line naming
the file and a field or row, or accepts; never another exception. Accepted tiny recipes also train (one
step) without one. The fast layer tries a bounded number of examples; `HYPOTHESIS_PROFILE=nightly` tries
many more.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedforge.errors import EmbedforgeError
from embedforge.recipe import load_recipe, recipe_files

from conftest import REPO, make_pairs

settings.register_profile(
    "fast", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "nightly", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

SEEDS = [yaml.safe_load(path.read_text()) for path in recipe_files(folder=str(REPO / "deployments"))]

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "no", "2e1", "../x", "a/b", "0 0 4 * * 1", "nan", "MultipleNegativesRankingLoss", "@daily"]),
    # What the audit planted: a password in a URL, a token, a prompt reaching into an object, a percent.
    st.sampled_from(["http://u:pw@127.0.0.1:9/v1", "hf_" + "a" * 34, "{text.__class__} {text}", "{text[0]}", "80"]),
    st.text(max_size=12),
    st.lists(st.integers(min_value=-5, max_value=5000), max_size=4),
    st.dictionaries(st.sampled_from(["anchor", "x", "scale", "gain"]), st.floats(allow_nan=True), max_size=2),
)


def _paths(node, prefix=()) -> list[tuple]:
    """Every key path in a recipe, sections and leaves."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*prefix, key))
            found += _paths(value, (*prefix, key))
    return found


@st.composite
def mutated(draw, base: dict) -> dict:
    recipe = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(recipe)
        path = draw(st.sampled_from(paths)) if paths else ("name",)
        parent = recipe
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if action == "set":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        else:
            parent[draw(st.sampled_from(["extra", "lerning_rate", "test_file", "max_overlap", "cron"]))] = draw(VALUES)
    return recipe


def _dump(recipe: dict, path: Path) -> Path:
    # YAML as a user writes it; NaN and infinity as YAML spells them.
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _refused_well(error: EmbedforgeError, source: Path) -> None:
    for line in str(error).splitlines():
        assert line.startswith(f"{source}: ") and len(line) > len(f"{source}: ") + 3, line


@given(data=st.data())
def test_a_mutated_seed_recipe_is_refused_by_field_or_accepted(tmp_path_factory, data):
    base = data.draw(st.sampled_from(SEEDS))
    path = _dump(data.draw(mutated(base)), tmp_path_factory.mktemp("fuzz") / "recipe.yaml")
    try:
        load_recipe(path)
    except EmbedforgeError as error:
        _refused_well(error, path)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, _tiny_model_master):
    from conftest import make_recipe, write_jsonl

    root = tmp_path_factory.mktemp("tiny-fuzz")
    data = write_jsonl(root / "pairs.jsonl", make_pairs(60))
    recipe = make_recipe("tiny-fuzz", str(_tiny_model_master), data, push={"enabled": False})
    recipe["train"]["args"].update({"max_steps": 1, "num_train_epochs": 1})
    return recipe, root


def _validated(base: dict, root: Path, data):
    """A mutation of `base` written to a recipe file and checked as `validate` does: (the recipe, its folder), or
    (None, its folder) once its refusal is checked to name the file and a field or row on every line."""
    from embedforge.cli.preflight import preflight

    folder = root / f"case-{abs(hash(repr(data))) % 10**9}"
    folder.mkdir(exist_ok=True)
    path = _dump(data.draw(mutated(base)), folder / "recipe.yaml")
    try:
        recipe = load_recipe(path)
        preflight(recipe, str(path))
    except EmbedforgeError as error:
        _refused_well(error, path)
        return None, folder
    return recipe, folder


@given(data=st.data())
def test_a_mutated_tiny_recipe_is_refused_before_training_or_trains(tiny_world, data):
    """validate's promise: what it accepts gets through a training step without a traceback."""
    from embedforge.tasks.ingest import ingest_dataset
    from embedforge.tasks.split import split_dataset
    from embedforge.training.run import run_training

    recipe, folder = _validated(*tiny_world, data)
    if recipe is None:
        return
    try:
        reports = [ingest_dataset.fn(source, str(folder / "in")) for source in recipe.sources]
        files = {part: ingest_dataset.fn(source, str(folder / "in" / part)) for part, source in recipe.files.items()}
        splits = split_dataset.fn(recipe.split, reports[0], reports[1:], files, str(folder / "split"))
        run_training(recipe.train, splits, recipe.evaluate, folder / "run")
    except EmbedforgeError:
        pass  # the data stages refuse in one line too; a refusal after validate is a missed check, not a crash


@pytest.fixture(scope="module")
def every_section(tmp_path_factory, _tiny_model_master):
    """A documents recipe with every newer section: corpus, mine.choose, merge, a general set and export."""
    from test_corpus import write_docs

    from conftest import make_recipe, write_jsonl

    root = tmp_path_factory.mktemp("sections-fuzz")
    docs, general = write_docs(root / "docs"), write_jsonl(root / "general.jsonl", make_pairs(30, seed=9))
    recipe = make_recipe("tiny-sections", str(_tiny_model_master), general, push={"enabled": False})
    recipe["ingest"] = {"name": "docs", "keep": ["doc_id"]}
    recipe["train"]["max_seq_length"] = 64
    recipe["split"] = {"group_by": "doc_id", "eval_size": 0.1, "test_size": 0.3}
    recipe["corpus"] = {"path": str(docs), "chunk_tokens": 48, "overlap": 8, "min_chunk_tokens": 8}
    recipe["mine"] = {"choose": [{"range_min": 2}, {"max_score": 0.9}], "trial_steps": 5}
    recipe["merge"] = {"weights": [0.5, 1.0]}
    columns = {"anchor": "question", "positive": "context"}
    recipe["evaluate"] = {"general": [{"name": "faq", "path": str(general), "columns": columns}]}
    recipe["export"] = {"backends": ["onnx"], "max_drop": 0.02}
    return recipe, root


@given(data=st.data())
def test_a_mutated_recipe_of_every_section_is_refused_by_field_or_accepted(every_section, data):
    """The corpus, mine.choose, merge, general and export sections, mutated, through validate's full check."""
    _validated(*every_section, data)


ROW = st.one_of(
    st.fixed_dictionaries(
        {"question": st.text(max_size=20), "context": st.text(max_size=20), "topic": st.sampled_from(["a", "b"])}
    ),
    st.fixed_dictionaries({"question": st.integers(), "context": st.lists(st.text(max_size=3), max_size=2)}),
    st.fixed_dictionaries({"question": st.none(), "context": st.floats(allow_nan=True)}),
    st.just({"other": "column"}),
)
BROKEN = st.sampled_from(
    [b"", b"\n", b"{not json\n", b"[1, 2]\n", b'"text"\n', "caf\u00e9\n".encode("latin-1"), b"\xef\xbb\xbf"]
)


@given(rows=st.lists(ROW, min_size=0, max_size=30), broken=st.lists(BROKEN, max_size=3), where=st.integers(0, 30))
def test_a_broken_data_file_is_named_or_read(tmp_path_factory, rows, broken, where):
    from embedforge.config.ingest import IngestConfig
    from embedforge.tasks.ingest import ingest_dataset

    folder = tmp_path_factory.mktemp("data")
    lines = [json.dumps(row).encode() + b"\n" for row in rows if not _has_nan(row)]
    lines[min(where, len(lines)) : min(where, len(lines))] = broken
    path = folder / "pairs.jsonl"
    path.write_bytes(b"".join(lines))
    config = IngestConfig(path=str(path), columns={"anchor": "question", "positive": "context"}, min_rows=1)
    try:
        report = ingest_dataset.fn(config, str(folder / "out"))
    except EmbedforgeError as error:
        assert str(path) in str(error), str(error)
        return
    assert report.rows >= 1


def _has_nan(row: dict) -> bool:
    return any(isinstance(value, float) and not math.isfinite(value) for value in row.values())
