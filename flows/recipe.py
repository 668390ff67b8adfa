"""One typed recipe per model: every stage's configuration, composed; defaults live in the stages.

A recipe file in deployments/ holds only what differs from those defaults.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flows.recipe_file import non_finite, read_yaml
from tasks.card import CardConfig
from tasks.errors import EmbedforgeError, one_line
from tasks.evaluate import EvaluateConfig
from tasks.ingest import STANDARD_COLUMNS, IngestConfig
from tasks.mine import MineConfig
from tasks.push import PushConfig
from tasks.split import SplitConfig
from tasks.train import TrainConfig, loss_data_problem


class ScheduleConfig(BaseModel):
    """When the deployment retrains on its own."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(description="Cron expression, e.g. '0 3 * * 1' for Mondays at 03:00.")
    timezone: str = Field("UTC", description="IANA timezone the cron expression is read in.")

    @model_validator(mode="after")
    def _prefect_accepts_it(self) -> ScheduleConfig:
        fields = self.cron.split()
        if len(fields) != 5:
            # Prefect would read a sixth field as seconds: "0 0 4 * * 1" runs at 04:00 on every day of January.
            raise ValueError(
                f"cron: {self.cron!r} has {len(fields)} fields; give five (minute hour day month weekday), "
                "e.g. '0 4 * * 1' for Mondays at 04:00"
            )
        # Prefect's own schedule model: what it refuses at deploy time is refused here, by field.
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=self.cron, timezone=self.timezone)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = error["loc"][0] if error["loc"] else "cron"
            raise ValueError(f"{field}: {error['msg'].removeprefix('Value error, ')}") from None
        return self


class DeploymentConfig(BaseModel):
    """How the model's Prefect deployment runs: where, when, and with which labels."""

    model_config = ConfigDict(extra="forbid")

    work_pool: str = Field("gpu", description="Prefect work pool whose workers run the training.")
    work_queue: str | None = Field(None, description="Work queue within the pool.")
    schedule: ScheduleConfig | None = Field(None, description="Retraining schedule; none: run on demand only.")
    tags: list[str] = Field(default_factory=list, description="Extra deployment tags (the recipe name is always one).")
    job_variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Work pool job variables, e.g. env, image, container_create_kwargs, gpu_limit.",
    )
    concurrency_limit: int = Field(
        1, ge=1, description="Runs of this model at once; one, so two retrains never race for the same repo."
    )
    crash_retries: int = Field(
        3,
        ge=0,
        description="Automatic retries of a run whose worker died (it resumes from its newest checkpoint).",
    )


# A release made with the same data, base model and these sections is what a new run would make again.
MODEL_SECTIONS = ("ingest", "split", "mine", "train", "evaluate")


class Recipe(BaseModel):
    """Everything that makes one fine-tuned model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9.-]*$",
        description="Lowercase kebab-case name: the run folder, deployment and artifact keys use it.",
    )
    description: str = Field("", description="What this model is for.")
    ingest: IngestConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    mine: MineConfig | None = Field(None, description="Mine hard negatives from the training split before training.")
    train: TrainConfig
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    card: CardConfig = Field(default_factory=CardConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, data: Any) -> Any:
        # NaN passes every comparison check by failing none of them: a NaN gate always passes.
        found = non_finite(data)
        if found:
            raise ValueError(f"{found[0]}: not a finite number; give a number (NaN and infinity mean nothing here)")
        return data

    @model_validator(mode="after")
    def _evaluate_matryoshka_by_default(self) -> Recipe:
        # A Matryoshka model is judged at the dims it was trained for unless the recipe says otherwise.
        if self.evaluate.matryoshka_dims is None and self.train.loss.matryoshka_dims:
            self.evaluate.matryoshka_dims = list(self.train.loss.matryoshka_dims)
        return self

    @model_validator(mode="after")
    def _evaluate_with_the_training_prompts(self) -> Recipe:
        # Base and fine-tuned models are measured with the prompts the model is trained to expect.
        prompts = self.train.args.get("prompts")
        if self.evaluate.prompts is None and prompts:
            if isinstance(prompts, str):
                prompts = {"anchor": prompts, "positive": prompts}
            if not all(isinstance(value, str) for value in prompts.values()):
                raise ValueError(
                    "train.args.prompts: per-dataset prompts cannot be matched to the evaluators; "
                    "give column prompts (anchor: ..., positive: ...) or set evaluate.prompts"
                )
            self.evaluate.prompts = dict(prompts)
        return self

    @model_validator(mode="after")
    def _loss_reads_the_data(self) -> Recipe:
        if problem := loss_data_problem(self.train.loss.name, self.ingest.kind):
            raise ValueError(f"train.loss.name: {problem}")
        return self

    @model_validator(mode="after")
    def _prompts_for_columns_that_exist(self) -> Recipe:
        # A prompt for a column the data does not have would be silently unused.
        columns = sum(STANDARD_COLUMNS[self.ingest.kind], [])
        for field, prompts in (
            ("train.args.prompts", self.train.args.get("prompts")),
            ("evaluate.prompts", self.evaluate.prompts),
        ):
            unknown = [key for key in prompts or {} if isinstance(prompts, dict) and key not in columns]
            if unknown:
                raise ValueError(
                    f"{field}: no column {', '.join(map(repr, unknown))} in {self.ingest.kind} data ({columns})"
                )
        return self

    @model_validator(mode="after")
    def _mine_with_the_base_model_by_default(self) -> Recipe:
        if self.mine and self.ingest.kind != "retrieval":
            raise ValueError(
                f"mine: hard negatives need retrieval pairs (anchor, positive); ingest.kind is {self.ingest.kind}"
            )
        if self.mine and not self.mine.model:
            self.mine.model, self.mine.model_revision = self.train.base_model, self.train.base_model_revision
        return self

    @model_validator(mode="after")
    def _distinct_eval_sources(self) -> Recipe:
        # Each evaluation dataset gets its own folder and metric prefix, named after it.
        labels = [source.label for source in self.split.eval_sources]
        if len(set(labels)) < len(labels):
            raise ValueError(f"split.eval_sources: give each source its own name (names: {labels})")
        return self

    @property
    def sources(self) -> list[IngestConfig]:
        """Every dataset the run reads: the training data first, then the separate evaluation sources."""
        return [self.ingest, *self.split.eval_sources]

    @property
    def files(self) -> dict[str, IngestConfig]:
        """The test and eval files that are used whole, read like the training data."""
        return self.split.files(self.ingest)

    def to_yaml(self) -> str:
        """The resolved recipe, defaults filled in, as saved beside every run."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()[:16]

    def model_fingerprint(self) -> str:
        """The sections that decide the model's weights and numbers; card, push and deployment do not."""
        sections = self.model_dump(mode="json", include=set(MODEL_SECTIONS))
        return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()[:16]


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that a validation error's location points into."""
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        field = model.model_fields.get(part) if is_model else None
        if field is None:
            return None
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            is_list = getattr(candidate, "__origin__", None) is list
            inner = getattr(candidate, "__args__", (candidate,))[0] if is_list else candidate
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                model = inner
                break
        else:
            model = None
    return model


def format_errors(exc: ValidationError, source: str) -> str:
    """One line per problem: file, dotted field path, and what is wrong (with a suggestion for typos)."""
    lines = []
    for error in exc.errors():
        loc = tuple(str(p) if not isinstance(p, int) else p for p in error["loc"])
        path = ".".join(str(p) for p in loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields) if parent else [], n=1)
            message = "unknown key" + (f" — did you mean {close[0]}?" if close else "")
        elif ": " in message and not message.startswith(("Input", "String", "Field")):
            key, _, rest = message.partition(": ")
            if " " not in key:
                path, message = f"{path}.{key}" if path else key, rest
        lines.append(f"{source}: {one_line(path or '(top level)')}: {one_line(message)}")
    return "\n".join(lines)


def _yaml_value(raw: str):
    """A --set value as YAML 1.2 reads it, like the recipe file: `no` stays the word the user typed."""
    return read_yaml(raw)


def _apply_override(data: dict, assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise EmbedforgeError(f"--set {assignment!r}: expected key.path=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise EmbedforgeError(f"--set {assignment!r}: {part} is not a section")
    node[leaf] = _yaml_value(raw)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe file; every problem is reported against the file and field."""
    path = Path(path)
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
    except EmbedforgeError as exc:
        raise EmbedforgeError(f"{path}: {exc}") from None
    except FileNotFoundError:
        raise EmbedforgeError(f"{path}: no such recipe file") from None
    except IsADirectoryError:
        raise EmbedforgeError(f"{path}: is a folder; give a recipe file, e.g. {path}/<name>.yaml") from None
    except UnicodeDecodeError as exc:
        raise EmbedforgeError(f"{path}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from None
    except OSError as exc:
        raise EmbedforgeError(f"{path}: cannot read the recipe: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise EmbedforgeError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise EmbedforgeError(f"{path}: a recipe is a YAML mapping of sections (ingest, train, ...)")
    data.setdefault("name", path.stem)
    for assignment in overrides or []:
        _apply_override(data, assignment)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise EmbedforgeError(format_errors(exc, str(path))) from None


def load_job_variables(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of work-pool job variables, e.g. the Docker pool's GPU request."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise EmbedforgeError(f"{path}: cannot read job variables: {exc}") from None
    if not isinstance(data, dict):
        raise EmbedforgeError(f"{path}: job variables must be a YAML mapping")
    return data


def recipe_files(paths: list[str] | None = None, folder: str = "deployments") -> list[Path]:
    """The given recipe files, or every recipe in deployments/."""
    if paths:
        return [Path(p) for p in paths]
    return sorted(p for p in Path(folder).glob("*.yaml") if not p.name.startswith("_"))


def reference_markdown() -> str:
    """The recipe reference (every key, its default and meaning), generated from the models themselves."""
    lines = ["| key | default | description |", "|:--|:--|:--|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            nested = _model_at(tuple(key.split(".")))
            # Sections are walked into; a list of sections (split.eval_sources) is one key.
            if nested is not None and nested is not model and typing.get_origin(field.annotation) is not list:
                walk(nested, key + ".")
                continue
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            lines.append(f"| `{key}` | `{default}` | {(field.description or '').replace('|', '/')} |")

    walk(Recipe, "")
    return "\n".join(lines)
