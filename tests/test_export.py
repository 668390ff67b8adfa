"""Serving backends: ONNX and OpenVINO files in the release, each measured against the PyTorch model."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from embedforge.backends.onnx import export_onnx
from embedforge.backends.runtime import load_backend
from embedforge.checks.export import check_export
from embedforge.errors import EmbedforgeError
from embedforge.flows.finetune import finetune
from embedforge.models import load_model
from embedforge.recipe import Recipe, load_recipe

from hub_server import LocalHub

TOKEN = "hf_embedforgeTestToken0123456789"
ALL = ["onnx", "onnx-int8", "openvino", "openvino-int8"]
FILES = {
    "onnx": "onnx/model_O2.onnx",
    "onnx-int8": "onnx/model_qint8_avx512_vnni.onnx",
    "openvino": "openvino/openvino_model.xml",
    "openvino-int8": "openvino/openvino_model_qint8_quantized.xml",
}
TEXTS = ["what is known about the quiet harbour?", "The lighthouse is white and tall.", "a man plays a guitar"]


def _card_rows(card: str) -> dict[str, str]:
    """{backend: its 'in the release' cell} of the card's backends table, and the reasons listed below it."""
    section = card.split("### Serving Backends", 1)[1].split("###", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and " | " in line]
    reasons = dict(re.findall(r"^- (\S+) left out: (.+)$", section, re.M))
    return {cells[0][2:]: reasons.get(cells[0][2:], cells[1]) for cells in rows[1:] if cells[0][2:] != "pytorch"}


@pytest.mark.usefixtures("prefect_server")
def test_every_backend_is_published_in_one_commit_and_loads_back_from_the_hub(recipe_dict, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # this test talks to the local Hub
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    recipe_dict["export"] = {"backends": ALL, "max_drop": 1.0, "calibration_texts": 20, "throughput_texts": 32}
    with LocalHub() as hub:
        recipe_dict["push"] = {"repo_id": "acme/tiny-model", "endpoint": hub.url, "retry_delay_seconds": 0}
        run = finetune(recipe=Recipe.model_validate(recipe_dict), output_dir=str(tmp_path / "runs"))

        (commit,) = hub.state.commits("acme/tiny-model")  # the weights, the card and every backend: one commit
        files = set(commit["files"])
        assert set(FILES.values()) | {"model.safetensors", "README.md", "training_meta.json"} <= files
        assert {"openvino/openvino_model.bin", "openvino/openvino_model_qint8_quantized.bin"} <= files
        assert "onnx/model.onnx" not in files  # the unoptimized export the others start from is not asked for
        meta = json.loads(commit["files"]["training_meta.json"])
        assert [b["backend"] for b in meta["backends"]] == ["pytorch", *ALL] and all(
            b["kept"] for b in meta["backends"]
        )

        pytorch = load_model(run.model_dir).encode(TEXTS, normalize_embeddings=True)
        for backend, file in FILES.items():
            served = load_backend("acme/tiny-model", backend.split("-")[0], file, endpoint=hub.url, token=TOKEN)
            found = served.encode(TEXTS, normalize_embeddings=True)
            # fp32 files compute what PyTorch does up to float rounding; int8 ones keep each embedding's direction.
            if backend.endswith("int8"):
                assert (found * pytorch).sum(axis=1).min() > 0.9, backend
            else:
                assert np.abs(found - pytorch).max() < 1e-3, backend
    card = (Path(run.model_dir) / "README.md").read_text()
    assert _card_rows(card) == dict.fromkeys(ALL, "yes")
    assert 'backend="onnx", model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"}' in card


@pytest.mark.usefixtures("prefect_server")
def test_a_backend_that_loses_more_than_max_drop_is_left_out_and_named(recipe_dict, tmp_path, monkeypatch):
    import embedforge.tasks.export as export

    def broken_int8(model_dir, backend, file, threads):
        served = load_backend(model_dir, backend, file, threads)
        if "qint8" in file:  # a quantization gone wrong: every text lands somewhere at random
            runtime = served[0].model
            runtime.run = lambda inputs, run=runtime.run: np.random.default_rng(0).normal(size=run(inputs).shape)
        return served

    monkeypatch.setattr(export, "load_backend", broken_int8)
    recipe_dict["export"] = {"backends": ["onnx", "onnx-int8"], "throughput_texts": 32}
    monkeypatch.chdir(tmp_path)  # the run directory relative, as `embedforge run` makes it by default
    run = finetune(recipe=Recipe.model_validate(recipe_dict), output_dir="runs")

    release = tmp_path / "published" / run.push.release
    assert (release / "onnx" / "model_O2.onnx").exists()
    assert sorted(p.name for p in (release / "onnx").iterdir()) == ["model_O2.onnx"]
    rows = _card_rows((release / "README.md").read_text())
    assert rows["onnx"] == "yes"
    assert rows["onnx-int8"].startswith("lost ") and rows["onnx-int8"].endswith(", more than export.max_drop 0.01")
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tiny-test-export"])))
    artifact = max(found, key=lambda a: a.created)
    assert artifact.description.startswith("Backends in the release: onnx;")
    assert "| onnx-int8 | **no** |" in artifact.data and "- onnx-int8 left out: lost " in artifact.data


def test_validate_names_the_runtime_a_backend_needs_and_a_level_the_model_cannot_take(
    recipe_dict, tiny_model, monkeypatch
):
    import importlib.util

    import embedforge.checks.export as checks

    recipe_dict["export"] = {"backends": ["onnx", "openvino-int8"]}
    recipe = Recipe.model_validate(recipe_dict)
    assert check_export(recipe) == []
    real = importlib.util.find_spec
    monkeypatch.setattr(checks.importlib.util, "find_spec", lambda name: None if name == "nncf" else real(name))
    assert check_export(recipe) == [("export.backends", "openvino-int8 needs nncf: pip install 'embedforge[export]'")]
    config = json.loads((Path(tiny_model) / "config.json").read_text())
    (Path(tiny_model) / "config.json").write_text(json.dumps({**config, "model_type": "qwen3"}))
    assert check_export(recipe)[-1] == (
        "export.optimization_level",
        "O2 fuses the attention of BERT-like encoders (albert, bert, camembert, distilbert, electra, ernie, mpnet, "
        "roberta, xlm-roberta); qwen3 is not one: use O1",
    )


@pytest.mark.parametrize(
    ("export", "message"),
    [
        (
            {"instruction_set": "avx9"},
            "export.instruction_set: Input should be 'avx512_vnni', 'avx512', 'avx2' or 'arm64'",
        ),
        ({"optimization_level": "O5"}, "export.optimization_level: Input should be 'O1', 'O2', 'O3' or 'O4'"),
        ({"backends": ["onnx", "onnx"]}, "export.backends: ['onnx', 'onnx']: name each backend once"),
        (
            {"backends": ["tensorrt"]},
            "export.backends[0]: Input should be 'onnx', 'onnx-int8', 'openvino' or 'openvino-int8'",
        ),
    ],
)
def test_a_bad_export_section_is_one_line_naming_the_field(recipe_dict, write_recipe, export, message):
    recipe_dict["export"] = export
    with pytest.raises(EmbedforgeError) as error:
        load_recipe(write_recipe(recipe_dict))
    assert message in str(error.value) and "Traceback" not in str(error.value)


@pytest.mark.usefixtures("prefect_server")
def test_a_lora_adapter_exports_with_its_weights_merged_in(tiny_model, pairs_file, tmp_path):
    pytest.importorskip("peft")
    from conftest import make_recipe

    recipe = make_recipe("tiny-lora", tiny_model, pairs_file, train_args={"learning_rate": 5e-3})
    recipe["train"]["peft"] = {"r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}
    recipe["push"] = {"local_dir": str(tmp_path / "published")}
    recipe["export"] = {"backends": ["onnx"], "max_drop": 1.0, "throughput_texts": 16}
    run = finetune(recipe=Recipe.model_validate(recipe), output_dir=str(tmp_path / "runs"))

    release = tmp_path / "published" / run.push.release
    assert (release / "adapter_config.json").exists() and (release / "onnx" / "model_O2.onnx").exists()
    # The release as PyTorch loads it (base + adapter) and its ONNX file give the same embeddings.
    pytorch = load_model(str(release)).encode(TEXTS, normalize_embeddings=True)
    served = load_backend(str(release), "onnx", "onnx/model_O2.onnx").encode(TEXTS, normalize_embeddings=True)
    assert np.abs(served - pytorch).max() < 1e-4
    assert not np.allclose(pytorch, load_model(tiny_model).encode(TEXTS, normalize_embeddings=True), atol=1e-4)

    # Merged, not traced through peft: the exported graph is the base architecture's, op for op, with no LoRA
    # branch beside each projection.
    def ops(file: Path) -> Counter:
        return Counter(node.op_type for node in onnx.load(str(file)).graph.node)

    plain = export_onnx(load_model(tiny_model), tmp_path / "base" / "model.onnx")
    assert ops(Path(run.run_dir) / "export" / "onnx" / "model.onnx") == ops(plain)


def test_loading_a_backend_file_the_release_lacks_names_the_release_and_its_files(tiny_model):
    folder = Path(tiny_model) / "onnx"
    folder.mkdir()
    (folder / "model_O2.onnx").write_bytes(b"")
    with pytest.raises(EmbedforgeError) as error:
        load_backend(tiny_model, "onnx", "onnx/model_qint8_avx2.onnx")
    assert (
        str(error.value) == f"{tiny_model}: no file onnx/model_qint8_avx2.onnx; its backend files: onnx/model_O2.onnx"
    )
    with pytest.raises(EmbedforgeError, match="backend 'tensorrt': one of onnx, openvino"):
        load_backend(tiny_model, "tensorrt", "model.plan")
