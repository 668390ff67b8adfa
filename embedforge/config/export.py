"""The export section: serving backends of the release, each measured against the PyTorch model."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from embedforge.config.section import Section

Backend = Literal["onnx", "onnx-int8", "openvino", "openvino-int8"]


class ExportConfig(Section):
    """ONNX and OpenVINO files in the release, in sentence-transformers' layout; pip install 'embedforge[export]'."""

    model_config = ConfigDict(extra="forbid")

    backends: list[Backend] = Field(
        ["onnx", "onnx-int8", "openvino-int8"],
        min_length=1,
        description="onnx: onnx/model_<optimization_level>.onnx; onnx-int8: onnx/model_qint8_<instruction_set>.onnx "
        "(dynamic int8; quint8 for avx2); openvino: openvino/openvino_model.xml; openvino-int8: "
        "openvino/openvino_model_qint8_quantized.xml (static int8, calibrated on the run's training texts).",
    )
    optimization_level: Literal["O1", "O2", "O3", "O4"] = Field(
        "O2",
        description="optimum's ONNX levels: O1 graph optimizations, O2 adds transformer fusions (BERT-like encoders), "
        "O3 the GELU approximation, O4 fp16 weights (CUDA only).",
    )
    instruction_set: Literal["avx512_vnni", "avx512", "avx2", "arm64"] = Field(
        "avx512_vnni", description="The CPU the int8 ONNX model is quantized for (optimum's AutoQuantizationConfig)."
    )
    calibration_texts: int = Field(
        300, ge=1, description="Training texts that calibrate the static int8 OpenVINO model (optimum's default)."
    )
    max_drop: float = Field(
        0.01,
        ge=0,
        le=1,  # a fraction of the metric: 1 already lets any backend through
        description="A backend whose headline metric on the test split is lower than the PyTorch model's by more than "
        "this is left out of the release.",
    )
    throughput_texts: int = Field(
        512, ge=1, description="Test-split texts encoded to time each backend against the PyTorch model."
    )

    @field_validator("backends")
    @classmethod
    def _once(cls, backends: list[str]) -> list[str]:
        if len(set(backends)) < len(backends):
            raise ValueError(f"{backends}: name each backend once")
        return backends
