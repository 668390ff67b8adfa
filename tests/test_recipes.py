"""Recipes: every file in deployments/ validates, and a bad one is reported by file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedforge.errors import EmbedforgeError
from embedforge.recipe import load_recipe, recipe_files

from conftest import cli

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", recipe_files(folder=str(REPO / "deployments")), ids=lambda p: p.name)
def test_every_recipe_in_deployments_validates(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem


def test_misspelled_trainer_argument_names_file_field_and_fix(write_recipe, recipe_dict):
    recipe_dict["train"]["args"]["learning_rat"] = 1e-5
    path = write_recipe(recipe_dict, "x.yaml")
    result = cli("validate", path)
    assert result.exit_code == 1
    assert f"{path}: train.args.learning_rat: unknown key — did you mean learning_rate?" in result.output


def test_misspelled_section_key_and_wrong_type(write_recipe, recipe_dict):
    recipe_dict["ingest"]["colums"] = recipe_dict["ingest"].pop("columns")
    recipe_dict["split"]["test_size"] = "a lot"
    path = write_recipe(recipe_dict)
    with pytest.raises(EmbedforgeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert f"{path}: ingest.colums: unknown key — did you mean columns?" in message
    assert f"{path}: split.test_size: Input should be a valid number" in message


def test_trainer_argument_of_wrong_type(write_recipe, recipe_dict):
    recipe_dict["train"]["args"]["num_train_epochs"] = "many"
    with pytest.raises(EmbedforgeError, match=r"train\.args\.num_train_epochs: .*got 'many'"):
        load_recipe(write_recipe(recipe_dict))


def test_unknown_loss_and_loss_argument(write_recipe, recipe_dict):
    recipe_dict["train"]["loss"] = {"name": "MultipleNegativesRankingLoss", "args": {"scal": 20}}
    with pytest.raises(
        EmbedforgeError,
        match=r"train\.loss\.args\.scal: not an argument of MultipleNegativesRankingLoss — did you mean scale\?",
    ):
        load_recipe(write_recipe(recipe_dict))


def test_defaults_live_in_code_and_overrides_apply(write_recipe, recipe_dict):
    recipe = load_recipe(write_recipe(recipe_dict), ["train.args.num_train_epochs=5", "push.private=false"])
    assert recipe.train.args["num_train_epochs"] == 5
    assert recipe.push.private is False
    assert recipe.split.seed == 7 and recipe.evaluate.batch_size == 32  # the latter from the code's default


def test_missing_recipe_file_and_bad_yaml(tmp_path):
    with pytest.raises(EmbedforgeError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(EmbedforgeError, match=f"{bad}: not valid YAML"):
        load_recipe(bad)


def test_the_docs_recipe_reference_is_current():
    from embedforge.cli.reference import reference_markdown

    assert reference_markdown() in (REPO / "docs" / "reference.md").read_text(), (
        "run `embedforge recipe-reference` and paste it into docs/reference.md"
    )


@pytest.mark.parametrize("path", recipe_files(folder=str(REPO / "deployments")), ids=lambda p: p.name)
def test_artifact_keys_of_every_recipe_are_valid_prefect_keys(path):
    from prefect.types.names import raise_on_name_alphanumeric_dashes_only

    from embedforge.types import artifact_key

    recipe = load_recipe(path)
    for what in ("gain", "model-card", "push"):
        raise_on_name_alphanumeric_dashes_only(artifact_key(recipe.name, what))


def test_label_map_on_retrieval_data_is_refused_by_field(write_recipe, recipe_dict):
    recipe_dict["ingest"]["label_map"] = {0: 1}
    path = write_recipe(recipe_dict)
    with pytest.raises(
        EmbedforgeError, match=rf"{path}: ingest\.label_map: rewrites label or score values; retrieval data has neither"
    ):
        load_recipe(path)


def test_override_sets_nested_values_read_as_yaml():
    from embedforge.recipe_file import apply_override

    data = {"train": {"args": {}}}
    apply_override(data, "train.args.num_train_epochs=5")
    apply_override(data, "push.local_dir=/tmp/out")
    assert data == {"train": {"args": {"num_train_epochs": 5}}, "push": {"local_dir": "/tmp/out"}}
    with pytest.raises(EmbedforgeError, match=r"^--set 'foo': expected key.path=value$"):
        apply_override(data, "foo")
    with pytest.raises(
        EmbedforgeError, match=r"^--set 'train.args.num_train_epochs.x=1': num_train_epochs is not a section$"
    ):
        apply_override(data, "train.args.num_train_epochs.x=1")


def test_format_errors_gives_one_line_per_problem_with_file_and_field():
    from pydantic import ValidationError

    from embedforge.recipe import Recipe
    from embedforge.recipe_file import format_errors

    bad = {"name": "x", "ingest": {"path": "d.jsonl", "nme": "docs"}, "train": {"base_model": "m", "devices": 0}}
    with pytest.raises(ValidationError) as error:
        Recipe.model_validate(bad)
    assert format_errors(error.value, "r.yaml", Recipe).splitlines() == [
        "r.yaml: ingest.nme: unknown key — did you mean name?",
        "r.yaml: train.devices: Input should be greater than or equal to 1",
    ]


def test_a_recipe_reads_as_yaml_1_2_reads_it():
    """What a user types means what it says: 2e1 is a number, `no` a word, a date a string, 010 ten."""
    from embedforge.recipe_file import read_yaml

    text = "scale: 2e1\nlr: 5.0e-5\nsave_strategy: no\nflag: true\nwhen: 2026-01-01\nsteps: 010\nmask: 0x10\n"
    assert read_yaml(text) == {
        "scale": 20.0,
        "lr": 5e-5,
        "save_strategy": "no",
        "flag": True,
        "when": "2026-01-01",
        "steps": 10,
        "mask": 16,
    }


def test_non_finite_numbers_are_found_wherever_they_are():
    from embedforge.recipe_file import non_finite

    assert non_finite({"train": {"args": {"lr": float("nan")}}, "evaluate": {"dims": [64, float("inf")]}}) == [
        "train.args.lr",
        "evaluate.dims[1]",
    ]


def test_a_trainer_number_written_as_a_string_is_read_as_the_number():
    """YAML `max_steps: "80"` validates (the trainer's type is int); the trainer would compare the string with 0."""
    from embedforge.config.train import TrainConfig

    given = {"max_steps": "80", "learning_rate": "5e-5", "run_name": "12", "per_device_train_batch_size": 32.0}
    args = TrainConfig(base_model="x", args=given).args
    assert args == {"max_steps": 80, "learning_rate": 5e-05, "run_name": "12", "per_device_train_batch_size": 32}
    assert type(args["per_device_train_batch_size"]) is int  # the batch sampler refuses a float
