"""`embedforge recipe-reference`: every recipe key, its default and meaning, generated from the models themselves."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from embedforge.recipe import Recipe
from embedforge.recipe_file import model_at


def reference_markdown() -> str:
    """The recipe reference (every key, its default and meaning), generated from the models themselves."""
    lines = ["| key | default | description |", "|:--|:--|:--|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            nested = model_at(Recipe, tuple(key.split(".")))
            # Sections are walked into; a list of sections (split.eval_sources) is one key.
            if nested is not None and nested is not model and typing.get_origin(field.annotation) is not list:
                walk(nested, key + ".")
                continue
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            lines.append(f"| `{key}` | `{default}` | {(field.description or '').replace('|', '/')} |")

    walk(Recipe, "")
    return "\n".join(lines)
