"""A SentenceTransformer (or a CrossEncoder) whose transformer runs an exported ONNX or OpenVINO file.

The tokenizer, pooling and normalization stay sentence-transformers' own, so an exported model is encoded and
evaluated exactly as the PyTorch one is; only the transformer's forward pass changes runtime. sentence-transformers'
own `backend="onnx"` needs optimum, which does not install beside transformers 5; this reads the same files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from embedforge.errors import EmbedforgeError

BACKENDS = ("onnx", "openvino")


class _Runtime(torch.nn.Module):
    """Stands in for the transformers model: token ids in, `last_hidden_state` (or a cross-encoder's `logits`) out."""

    def __init__(self, run, names: set[str], config, output: str):
        super().__init__()
        self.run, self.names, self.config, self.output = run, names, config, output

    def forward(self, **features):
        inputs = {name: features[name].cpu().numpy() for name in self.names if name in features}
        return {self.output: torch.from_numpy(self.run(inputs))}


def _onnx(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # the optimizer's notes on unused initializers are no news to a user
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    return (lambda inputs: session.run([output], inputs)[0]), {i.name for i in session.get_inputs()}


def _openvino(path: Path, threads: int):
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    names = {port.get_any_name() for port in compiled.inputs}
    return (lambda inputs: request.infer(inputs)[compiled.output(0)].copy()), names


def load_backend(
    model: str, backend: str, file_name: str, threads: int | None = None, cross_encoder: bool = False, **download
):
    """A release (a folder, or a Hub repo) with its transformer running `file_name` on `backend`.

    As `SentenceTransformer(model, backend=backend, model_kwargs={"file_name": file_name})` would load it (or
    `CrossEncoder`, for a reranker's folder); `file_name` is relative to the release, or an absolute path.
    `download`: snapshot_download's revision, endpoint, token.
    """
    from huggingface_hub import snapshot_download
    from sentence_transformers import CrossEncoder, SentenceTransformer

    if backend not in BACKENDS:
        raise EmbedforgeError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
    folder = Path(model) if Path(model).is_dir() else Path(snapshot_download(model, **download))
    if not (folder / file_name).is_file():
        found = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*") if p.suffix in (".onnx", ".xml"))
        raise EmbedforgeError(f"{model}: no file {file_name}; its backend files: {', '.join(found) or 'none'}")
    served = (CrossEncoder if cross_encoder else SentenceTransformer)(str(folder), device="cpu")
    transformer = served[0]
    run, names = (_onnx if backend == "onnx" else _openvino)(folder / file_name, threads or torch.get_num_threads())
    output = "logits" if cross_encoder else "last_hidden_state"
    transformer.model = _Runtime(run, names, transformer.model.config, output)  # the PyTorch weights are dropped here
    return served
