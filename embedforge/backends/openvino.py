"""OpenVINO files of a sentence-transformers model: the converted model and its static int8 quantization.

Names as sentence-transformers' `export_static_quantized_openvino_model` writes them
(`openvino/openvino_model.xml`, `openvino/openvino_model_qint8_quantized.xml`). The calibration texts are the
run's own training texts, not a Hub dataset: what the model will serve, and readable offline.
"""

from __future__ import annotations

from pathlib import Path


def convert_openvino(onnx_file: Path, folder: Path) -> Path:
    """`openvino/openvino_model.xml` (and .bin), converted from the ONNX export."""
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "openvino_model.xml"
    ov.save_model(ov.convert_model(str(onnx_file)), str(target), compress_to_fp16=False)
    return target


def quantize_openvino(converted: Path, model, texts: list[str]) -> Path:
    """`openvino_model_qint8_quantized.xml`: int8 with activation ranges taken from `texts`, one at a time."""
    import nncf
    import openvino as ov

    graph = ov.Core().read_model(str(converted))
    names = {port.get_any_name() for port in graph.inputs}

    def sample(text: str) -> dict:
        return {k: v.numpy() for k, v in model.preprocess([text]).items() if k in names}

    quantized = nncf.quantize(
        graph,
        nncf.Dataset([sample(text) for text in texts]),
        model_type=nncf.ModelType.TRANSFORMER,  # keeps softmax and layer norms in float, as optimum-intel does
        subset_size=len(texts),
    )
    target = converted.with_name("openvino_model_qint8_quantized.xml")
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    return target
