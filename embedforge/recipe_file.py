"""Reading a recipe file so that what it means is what it says.

PyYAML reads YAML 1.1, where a second `split:` silently replaces the first section whole, `2e1` is a
string, `no` is False and `.nan` is a number. A recipe is read here as YAML 1.2 reads it (booleans are
true/false, exponents without a dot are numbers), with duplicate keys refused naming both lines, and
any number that is not finite refused naming its field.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from embedforge.errors import EmbedforgeError, did_you_mean, one_line

# YAML 1.2's core-schema floats: 2e1, 1E-5, 5.0e-5, .5, -.inf, .nan
_FLOAT_12 = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_BOOL_12 = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT_12 = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")  # no 1.1 octal 010, sexagesimal 1:30 or 1_000


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and floats, and no duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise EmbedforgeError(
                    f"line {key_node.start_mark.line + 1}: duplicate key {key!r} (first on line {seen[key] + 1}); "
                    "YAML keeps only the last one, so merge the two into one"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        value = self.construct_scalar(node)
        return int(value, 0) if value[:2] in ("0o", "0x") else int(value, 10)


# Replace 1.1's implicit resolvers for bool, int, float and timestamp with 1.2's (dates stay strings).
_REPLACED = (
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
)
RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL_12, list("tTfF"))
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT_12, list("-+0123456789"))
RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
RecipeLoader.add_constructor("tag:yaml.org,2002:int", RecipeLoader.construct_yaml_int)


def read_yaml(text: str):
    """A recipe's YAML as YAML 1.2 reads it; duplicate keys raise EmbedforgeError("line N: ...")."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def non_finite(data, path: str = "") -> list[str]:
    """The dotted paths of NaN and infinite numbers anywhere in a recipe's data."""
    if isinstance(data, float) and not math.isfinite(data):
        return [path or "(top level)"]
    if isinstance(data, dict):
        return [found for key, value in data.items() for found in non_finite(value, f"{path}.{key}".lstrip("."))]
    if isinstance(data, list):
        return [found for i, value in enumerate(data) for found in non_finite(value, f"{path}[{i}]")]
    return []


def model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that a validation error's location points into."""
    model: Any = root
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


def format_errors(exc: ValidationError, source: str, root: type[BaseModel]) -> str:
    """One line per problem: file, dotted field path, and what is wrong (with a suggestion for typos)."""
    lines = []
    for error in exc.errors():
        loc = tuple(str(p) if not isinstance(p, int) else p for p in error["loc"])
        # A list item reads as YAML users and the other messages write it: mine.choose[1].range_max.
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).removeprefix(".")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            parent = model_at(root, loc[:-1])
            message = "unknown key" + did_you_mean(loc[-1], list(parent.model_fields) if parent else [])
        elif ": " in message and not message.startswith(("Input", "String", "Field")):
            key, _, rest = message.partition(": ")
            if " " not in key:
                path, message = f"{path}.{key}" if path else key, rest
        lines.append(f"{source}: {one_line(path or '(top level)')}: {one_line(message)}")
    return "\n".join(lines)


def apply_override(data: dict, assignment: str) -> None:
    """`--set key.path=value`: the value read as the recipe file reads it."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise EmbedforgeError(f"--set {assignment!r}: expected key.path=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise EmbedforgeError(f"--set {assignment!r}: {part} is not a section")
    node[leaf] = read_yaml(raw)  # YAML 1.2, like the recipe file: `no` stays a word
