"""ONNX files of a sentence-transformers model: the export, the optimized graph (O1-O4), dynamic int8.

The file names and settings are those of sentence-transformers' `export_optimized_onnx_model` and
`export_dynamic_quantized_onnx_model` (optimum's `AutoOptimizationConfig` and `AutoQuantizationConfig`), so
`SentenceTransformer(repo, backend="onnx", model_kwargs={"file_name": ...})` finds them where it looks.
"""

from __future__ import annotations

from pathlib import Path

import torch

# onnxruntime's transformer optimizer knows these encoders by the graph of BERT (as optimum maps them).
BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet", "albert", "ernie"}
# optimum's levels: O1 general graph optimizations; O2 adds the transformer fusions; O3 the GELU approximation;
# O4 stores the weights in fp16, for GPUs.
LEVELS = {
    "O1": {"opt_level": 1, "only_onnxruntime": True},
    "O2": {"opt_level": 2, "only_onnxruntime": False},
    "O3": {"opt_level": 2, "only_onnxruntime": False, "gelu_approximation": True},
    "O4": {"opt_level": 2, "only_onnxruntime": False, "gelu_approximation": True, "fp16": True},
}
# optimum's AutoQuantizationConfig.<name>(is_static=False): avx2 has no signed-int8 dot product, so uint8 weights.
INSTRUCTION_SETS = {"avx512_vnni": "QInt8", "avx512": "QInt8", "avx2": "QUInt8", "arm64": "QInt8"}


class _Encoder(torch.nn.Module):
    """The transformer with keyword inputs, returning the output the next module reads: the token embeddings the
    pooling reads, or a cross-encoder's logits."""

    def __init__(self, transformer, names: list[str], output: str):
        super().__init__()
        self.transformer, self.names, self.output = transformer, names, output

    def forward(self, *inputs):
        return getattr(self.transformer(**dict(zip(self.names, inputs)), return_dict=True), self.output)


def _traced_inputs(model) -> tuple[str, dict]:
    """(the output name, a tokenized sample): texts for an embedder, (query, passage) pairs for a cross-encoder."""
    if type(model).__name__ == "CrossEncoder":
        return "logits", model.preprocess([("an example query to trace", "a passage"), ("a second", "one")])
    return "last_hidden_state", model.preprocess(["an example sentence to trace", "a second one"])


def export_onnx(model, path: Path) -> Path:
    """The model's transformer as `onnx/model.onnx`: the inputs and output name optimum's ORT models expect."""
    output, sample = _traced_inputs(model)
    # What the tokenizer gives the transformer: token_type_ids only for models that take them.
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in sample]
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {name: {0: "batch_size", 1: "sequence_length"} for name in names}
    dynamic[output] = {0: "batch_size"} if output == "logits" else {0: "batch_size", 1: "sequence_length"}
    transformer = model[0].model.eval()
    served = transformer.config._attn_implementation
    # Traced from eager attention: its MatMul-Softmax-MatMul is the pattern onnxruntime fuses into one Attention op
    # (an SDPA trace is left unfused, and runs slower).
    transformer.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            torch.onnx.export(
                _Encoder(transformer, names, output),
                tuple(sample[name] for name in names),
                str(path),
                input_names=names,
                output_names=[output],
                dynamic_axes=dynamic,
                opset_version=17,
                dynamo=False,  # the TorchScript exporter: the dynamo one needs onnxscript and traces no faster
            )
    finally:  # the same model goes on to be timed as PyTorch serves it, and a failed export must not change that
        transformer.set_attn_implementation(served)
    return path


def optimize_onnx(source: Path, level: str, config) -> Path:
    """`model_<level>.onnx` beside the export: onnxruntime's transformer optimizer at optimum's level."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    settings = LEVELS[level]
    options = FusionOptions("bert")
    options.enable_gelu_approximation = settings.get("gelu_approximation", False)
    optimized = optimize_model(
        str(source),
        model_type="bert",
        # As optimum passes them: read from a graph, they are missed when the exporter folded the reshapes.
        num_heads=getattr(config, "num_attention_heads", 0),
        hidden_size=getattr(config, "hidden_size", 0),
        optimization_options=options,
        opt_level=settings["opt_level"],
        use_gpu=settings.get("fp16", False),
        only_onnxruntime=settings["only_onnxruntime"],
    )
    if settings.get("fp16"):
        optimized.convert_float_to_float16(keep_io_types=True)
    target = source.with_name(f"model_{level}.onnx")
    optimized.save_model_to_file(str(target))
    return target


def quantize_onnx(source: Path, instruction_set: str) -> Path:
    """`model_qint8_<instruction set>.onnx`: weights int8 per channel, activations quantized as they run."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    weights = QuantType[INSTRUCTION_SETS[instruction_set]]
    target = source.with_name(f"model_{weights.name.lower()}_{instruction_set}.onnx")
    quantize_dynamic(
        str(source),
        str(target),
        op_types_to_quantize=list(IntegerOpsRegistry),
        per_channel=True,
        reduce_range=False,
        weight_type=weights,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )
    return target
