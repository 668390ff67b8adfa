"""The train.loss section: a loss from sentence_transformers.losses by class name, checked against the loss itself."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from embedforge.columns import VALUE_COLUMN
from embedforge.config.evaluate import check_matryoshka_dims
from embedforge.config.section import Section
from embedforge.errors import did_you_mean

# What a loss reads beside the texts. sentence-transformers does not declare it, so the common ones are named
# here: a score loss on retrieval pairs would fail at its first step, naming no field.
LOSS_NEEDS = {
    "score": {"CoSENTLoss", "AnglELoss", "CosineSimilarityLoss"},
    "label": {
        "SoftmaxLoss",
        "ContrastiveLoss",
        "OnlineContrastiveLoss",
        "BatchAllTripletLoss",
        "BatchHardTripletLoss",
        "BatchSemiHardTripletLoss",
        "BatchHardSoftMarginTripletLoss",
    },
}


def _simple_type(hint) -> bool:
    """An annotation a YAML value can be checked against: numbers, booleans, text, their Literals and Optionals."""
    if hint in (int, float, bool, str) or typing.get_origin(hint) is typing.Literal:
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and all(
        arg is type(None) or _simple_type(arg) for arg in typing.get_args(hint)
    )


def loss_arg_problems(loss_class, args: dict[str, Any]) -> list[str]:
    """`args.<key>: <why>` for each loss argument whose value is not of the type the loss declares."""
    try:
        hints = typing.get_type_hints(loss_class.__init__)
    except Exception:  # an annotation that does not resolve: the loss checks its own arguments
        return []
    problems = []
    for key, value in args.items():
        hint = hints.get(key)
        if hint is None or not _simple_type(hint):
            continue
        try:
            TypeAdapter(hint).validate_python(value, strict=True)
        except ValidationError:
            shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
            problems.append(f"args.{key}: {value!r} is not a {shown}")
    return problems


def loss_data_problem(loss: str, kind: str) -> str | None:
    """Why this loss cannot train on this kind of data, or None."""
    for needs, names in LOSS_NEEDS.items():
        if loss in names and VALUE_COLUMN.get(kind) != needs:
            wanted = next(k for k, v in VALUE_COLUMN.items() if v == needs)
            return f"{loss} needs a {needs} per pair ({wanted} data); ingest.kind is {kind}"
    return None


class LossConfig(Section):
    """A loss from sentence_transformers.losses by class name, optionally wrapped in MatryoshkaLoss."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("MultipleNegativesRankingLoss", description="Class name in sentence_transformers.losses.")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the loss "
        "(e.g. scale: 20.0, similarity_fct: cos_sim, gather_across_devices: true).",
    )
    matryoshka_dims: list[int] | None = Field(
        None, description="Wrap the loss in MatryoshkaLoss with these dims (largest first)."
    )
    matryoshka_weights: list[float] | None = Field(None, description="MatryoshkaLoss weight per dim (default: 1 each).")
    n_dims_per_step: int = Field(-1, description="MatryoshkaLoss dims sampled per step (-1: all).")

    @model_validator(mode="after")
    def _known(self) -> LossConfig:
        # Imported here: a recipe file's shape is checked before sentence-transformers (seconds to import) loads.
        from sentence_transformers.sentence_transformer import losses

        cls = getattr(losses, self.name, None)
        if not inspect.isclass(cls):
            raise ValueError(
                f"unknown loss {self.name!r}{did_you_mean(self.name, [n for n in dir(losses) if n.endswith('Loss')])}"
            )
        params = set(inspect.signature(cls.__init__).parameters) - {"self", "model"}
        for key in self.args:
            if key not in params:
                raise ValueError(
                    f"args.{key}: not an argument of {self.name}{did_you_mean(key, params)} (it takes {sorted(params)})"
                )
        for problem in loss_arg_problems(cls, self.args):
            raise ValueError(problem)
        if self.matryoshka_weights and len(self.matryoshka_weights) != len(self.matryoshka_dims or []):
            raise ValueError("matryoshka_weights needs one weight per matryoshka_dims entry")
        check_matryoshka_dims(self.matryoshka_dims)
        return self
