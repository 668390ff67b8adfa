"""Reading a recipe file so that what it means is what it says.

PyYAML reads YAML 1.1, where a second `split:` silently replaces the first section whole, `2e1` is a
string, `no` is False and `.nan` is a number. A recipe is read here as YAML 1.2 reads it (booleans are
true/false, exponents without a dot are numbers), with duplicate keys refused naming both lines, and
any number that is not finite refused naming its field.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
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
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: keys written beside it override the merged ones, as YAML says
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


# The seed recipes are 1-3 KB, a few hundred YAML nodes and six levels deep; these are far above any recipe and
# far below what costs a parser time or memory. Checked on the event stream, before anything is built or walked.
MAX_RECIPE_BYTES = 1_000_000
MAX_NODES = 20_000
MAX_DEPTH = 32


def _closed(event, stack: list[list], sizes: dict[str, int]) -> tuple[int, str | None] | None:
    """The nodes an event completes and its anchor: a collection's end, a scalar, an alias (what its anchor stood
    for, counted again); None for events that complete nothing."""
    if isinstance(event, yaml.CollectionEndEvent):
        nodes, anchor = stack.pop()
        return nodes, anchor
    if isinstance(event, yaml.ScalarEvent):
        return 1, event.anchor
    if isinstance(event, yaml.AliasEvent):
        return sizes.get(event.anchor, 1), None
    return None


def check_shape(text: str) -> None:
    """Refuse, naming the line, a recipe that nests too deep or whose aliases expand to too many nodes.

    Each alias counts the nodes of what it stands for, so aliases of aliases (a "billion laughs") are counted as
    the walk over the recipe would meet them, without ever expanding one.
    """
    sizes: dict[str, int] = {}
    stack: list[list] = [[0, None]]  # per open collection: its nodes so far, its anchor
    for event in yaml.parse(text, Loader=RecipeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append([1, event.anchor])
            if len(stack) > MAX_DEPTH + 1:
                raise EmbedforgeError(
                    f"line {event.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep; a recipe needs a few"
                )
            continue
        closed = _closed(event, stack, sizes)
        if closed is None:
            continue
        nodes, anchor = closed
        sizes.update({anchor: nodes} if anchor else {})
        stack[-1][0] += nodes
        if stack[-1][0] > MAX_NODES:
            raise EmbedforgeError(
                f"line {event.start_mark.line + 1}: the recipe expands to more than {MAX_NODES:,} values (aliases of "
                "aliases?); a recipe has a few hundred"
            )


def read_recipe_file(path: Path):
    """The recipe file's YAML, refused in one line naming the file when it is missing, too large, not UTF-8,
    not YAML, or shaped to make the parser work without end."""
    try:
        if path.is_file() and path.stat().st_size > MAX_RECIPE_BYTES:
            raise EmbedforgeError(
                f"{path.stat().st_size:,} bytes; a recipe is a few KB (at most {MAX_RECIPE_BYTES:,} bytes are read)"
            )
        text = path.read_text(encoding="utf-8")
        check_shape(text)
        return read_yaml(text)
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
        raise EmbedforgeError(f"{path}: not valid YAML: {one_line(str(exc))}") from None


def non_finite(data, path: str = "") -> list[str]:
    """The dotted paths of NaN and infinite numbers anywhere in a recipe's data."""
    if isinstance(data, float) and not math.isfinite(data):
        return [path or "(top level)"]
    if isinstance(data, dict):
        return [found for key, value in data.items() for found in non_finite(value, f"{path}.{key}".lstrip("."))]
    if isinstance(data, list):
        return [found for i, value in enumerate(data) for found in non_finite(value, f"{path}[{i}]")]
    return []


def _allows_none(annotation) -> bool:
    return annotation is None or type(None) in getattr(annotation, "__args__", ())


def empty_sections(model: type[BaseModel], data: Any) -> Any:
    """A section left empty (every key commented out) reads as the section with its defaults.

    YAML reads `card:` with nothing under it as null; for a section that is on by default that means its
    defaults. An optional section (mine, merge, export) stays null: off, as before.
    """
    if not isinstance(data, dict):
        return data
    result = {}
    for key, value in data.items():
        field = model.model_fields.get(key) if isinstance(key, str) else None
        inner = model_at(model, (key,)) if field else None
        if value is None and field and not _allows_none(field.annotation):
            if not field.is_required():
                continue
            value = {} if inner else value
        result[key] = empty_sections(inner, value) if inner else value
    return result


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


def load_job_variables(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of work-pool job variables, e.g. the Docker pool's GPU request; read as a recipe is."""
    data = read_recipe_file(Path(path))
    if not isinstance(data, dict):
        raise EmbedforgeError(f"{path}: job variables must be a YAML mapping")
    return data
