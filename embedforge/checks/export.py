"""Pre-run checks of the export section: the runtimes each backend needs, and levels the model can take."""

from __future__ import annotations

import importlib.util

from embedforge.backends.onnx import BERT_LIKE
from embedforge.models import model_type
from embedforge.recipe import Recipe

# What writing and measuring each backend imports: every backend starts from the ONNX export.
NEEDS = {
    "onnx": ("onnx", "onnxruntime"),
    "onnx-int8": ("onnx", "onnxruntime"),
    "openvino": ("onnx", "openvino"),
    "openvino-int8": ("onnx", "openvino", "nncf"),
}


def _level_problem(recipe: Recipe) -> str | None:
    level = recipe.export.optimization_level
    if level == "O4":
        import torch

        if not torch.cuda.is_available():
            return "O4 stores fp16 weights for CUDA, and this machine has no CUDA GPU; use O1-O3"
    kind = model_type(recipe.train.base_model, recipe.train.base_model_revision)
    if level != "O1" and kind and kind not in BERT_LIKE:
        encoders = ", ".join(sorted(BERT_LIKE))
        return f"{level} fuses the attention of BERT-like encoders ({encoders}); {kind} is not one: use O1"
    return None


def check_export(recipe: Recipe) -> list[tuple[str, str]]:
    """Each backend's runtime is installed, and the optimization level suits the base model and this machine."""
    if not recipe.export:
        return []
    problems = []
    for backend in recipe.export.backends:
        missing = [name for name in NEEDS[backend] if importlib.util.find_spec(name) is None]
        if missing:
            problems.append(
                ("export.backends", f"{backend} needs {', '.join(missing)}: pip install 'embedforge[export]'")
            )
    if "onnx" in recipe.export.backends and (problem := _level_problem(recipe)):
        problems.append(("export.optimization_level", problem))
    return problems
