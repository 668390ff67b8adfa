"""embedforge's LLM client against a server someone else wrote: llama.cpp's OpenAI-compatible server.

llama-cpp-python's server (`python -m llama_cpp.server`) serves a tiny random-initialised llama model that
this script writes as a GGUF file (vocabulary of bytes and a few hundred pieces, 2 layers of width 64): its
replies are gibberish, which is all a protocol check needs. For each thing a run meets — the model list,
a chat completion, a wrong key, no key, an unknown model, more requests than the server runs at once —
it prints what the server answered and what embedforge made of it, then runs the generate-pairs stage.

llama-cpp-python has no wheel on the index (it compiles llama.cpp, ~15 min on 2 cores), so it lives in a
virtual environment of its own:

    python -m venv /tmp/llvenv && /tmp/llvenv/bin/pip install "llama-cpp-python[server]" gguf
    .venv/bin/python bench/llm_server_check.py --server-python /tmp/llvenv/bin/python
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

KEY = "sk-bench-right"
WORDS = "the of and to in is was for on that with as by at from his her which what how when where why who".split()


def make_gguf(path: str) -> None:
    """A llama model of random weights and a byte-fallback SentencePiece vocabulary (runs where gguf is)."""
    import gguf
    import numpy as np

    rng, width, ffn, layers = np.random.default_rng(0), 64, 128, 2
    pieces = [f"▁{w}" for w in WORDS] + [chr(c) for c in range(97, 123)] + [f"▁{chr(c)}" for c in range(97, 123)]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(2048)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_rope_dimension_count(width // 4)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(pieces))])
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}"
        "assistant:{% endif %}"
    )

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(len(tokens), width))
    writer.add_tensor("output_norm.weight", np.ones(width, dtype=np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), width))
    for i in range(layers):
        for name in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ones(width, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(width, width))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ffn, width))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ffn, width))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(width, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(python: str, model: Path, port: int, log: Path) -> subprocess.Popen:
    import httpx

    command = [python, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "tiny-llama"]
    command += ["--api_key", KEY, "--port", str(port), "--n_ctx", "2048", "--verbose", "False"]
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    for _ in range(120):
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit(f"llama_cpp.server did not start; its log: {log}")


def _llm(url: str, **settings):
    from embedforge.config.corpus import LLMConfig

    return LLMConfig(base_url=url, model="tiny-llama", api_key_env="BENCH_LLM_KEY", retries=1, **settings)


def _checked(llm) -> str:
    """What `embedforge validate` says of the endpoint (GET /models, the key, the model)."""
    from embedforge.checks.corpus import check_endpoint

    problems = check_endpoint(SimpleNamespace(corpus=SimpleNamespace(generate=SimpleNamespace(llm=llm))))
    return "; ".join(f"{field}: {message}" for field, message in problems) or "no problem"


async def _completed(llm, prompts: list[str], in_flight: int) -> str:
    """What the run's client made of chat completions sent `in_flight` at once."""
    from embedforge.errors import EmbedforgeError
    from embedforge.llm import _REFUSED, ChatClient

    _REFUSED.clear()  # a refusal is remembered per flow run; these checks run outside one, each on its own
    client = ChatClient(llm)
    async with client.session(in_flight):
        answers = await asyncio.gather(*(client.complete(p) for p in prompts), return_exceptions=True)
    errors = [a for a in answers if isinstance(a, Exception)]
    if errors:
        kind = "one line" if isinstance(errors[0], EmbedforgeError) else "a traceback"
        return f"{len(errors)} of {len(prompts)} refused, as {kind}: {str(errors[0])[:220]}"
    tokens = sum(a.completion_tokens for a in answers)
    return f"{len(answers)} replies, {tokens} completion tokens; first: {answers[0].text[:60]!r}"


def _stage(llm, folder: Path, chunks: int) -> str:
    """The generate-pairs stage on `chunks` chunks, as a run calls it."""
    import pandas as pd
    from prefect import flow

    from embedforge.config.corpus import GenerateConfig
    from embedforge.data_reports import CorpusReport
    from embedforge.tasks.generate import generate_pairs

    rows = [
        {"chunk_id": f"d{i}#0", "doc_id": f"d{i}", "title": f"Page {i}", "digest": f"{i:06d}", "text": text}
        for i, text in enumerate(f"The keeper of chamber {i} writes a ledger every evening." for i in range(chunks))
    ]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / "chunks.parquet")
    corpus = CorpusReport(documents=chunks, chunks=chunks, path=str(folder / "chunks.parquet"))
    config = GenerateConfig(method="llm", llm=llm)
    started = time.perf_counter()
    report = flow(name="llama-cpp-check")(generate_pairs)(config, corpus, str(folder / "cache"), str(folder / "out"))
    wall = time.perf_counter() - started
    return (
        f"{report.generated} chunks asked, {report.pairs} pairs parsed, {report.completion_tokens} tokens, {wall:.1f} s"
    )


def _raw(url: str, key: str | None, model: str = "tiny-llama", path: str = "/chat/completions") -> str:
    """What the server itself answers, status and body, to one request."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": "Write 1 question."}], "max_tokens": 8}
    if path == "/models":
        answer = httpx.get(url + path, headers=headers)
    else:
        answer = httpx.post(url + path, headers=headers, json=body, timeout=60)
    return f"HTTP {answer.status_code} `{answer.text[:70]}`"


def _overload(url: str, count: int) -> str:
    """`count` requests at once, straight to the server: what it answers when asked for more than it runs."""
    import httpx

    async def all_at_once() -> list[int]:
        body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Write 1 question."}], "max_tokens": 32}
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as http:
            answers = await asyncio.gather(*(http.post(url + "/chat/completions", json=body) for _ in range(count)))
        return [answer.status_code for answer in answers]

    started = time.perf_counter()
    statuses = asyncio.run(all_at_once())
    wall = time.perf_counter() - started
    return f"{count} at once: HTTP {sorted(set(statuses))}, all within {wall:.1f} s (queued, one at a time)"


def _rows(url: str, folder: Path, prompts: list[str]) -> list[tuple[str, str, str]]:
    import os

    os.environ["BENCH_LLM_KEY"] = KEY
    rows = [("GET /models", _raw(url, KEY, path="/models"), _checked(_llm(url)))]
    rows.append(
        ("a chat completion", _raw(url, KEY), asyncio.run(_completed(_llm(url, max_tokens=32), prompts[:1], 1)))
    )
    rows.append(
        (
            "64 at once, max_tokens 32",
            _overload(url, 64),
            asyncio.run(_completed(_llm(url, max_tokens=32), prompts, 64)),
        )
    )
    unknown = _llm(url, max_tokens=8).model_copy(update={"model": "other-model"})
    rows.append(("an unknown model: validate", _raw(url, KEY, path="/models"), _checked(unknown)))
    rows.append(
        (
            "an unknown model: completion",
            _raw(url, KEY, "other-model"),
            asyncio.run(_completed(unknown, prompts[:1], 1)),
        )
    )
    os.environ["BENCH_LLM_KEY"] = "sk-wrong"
    rows.append(("a wrong key: validate", _raw(url, "sk-wrong", path="/models"), _checked(_llm(url))))
    rows.append(("a wrong key: completion", _raw(url, "sk-wrong"), asyncio.run(_completed(_llm(url), prompts[:4], 4))))
    del os.environ["BENCH_LLM_KEY"]
    rows.append(("no key: validate", _raw(url, None, path="/models"), _checked(_llm(url))))
    rows.append(("no key: completion", _raw(url, None), asyncio.run(_completed(_llm(url), prompts[:4], 4))))
    os.environ["BENCH_LLM_KEY"] = KEY
    stage = _stage(_llm(url, max_in_flight=8, max_tokens=32), folder, 128)
    return rows + [("generate-pairs stage, 128 chunks, 8 in flight", "-", stage)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-python", required=True, help="a Python with llama-cpp-python[server] and gguf")
    parser.add_argument("--make-gguf", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.make_gguf:
        return make_gguf(options.make_gguf)

    folder = Path(tempfile.mkdtemp(prefix="llama-cpp-check-"))
    model, port = folder / "tiny-llama.gguf", _free_port()
    subprocess.run([options.server_python, __file__, "--server-python", "-", "--make-gguf", str(model)], check=True)
    server = _serve(options.server_python, model, port, folder / "server.log")
    url, prompts = f"http://127.0.0.1:{port}/v1", [f"Write 1 different question about chamber {i}." for i in range(64)]
    try:
        rows = _rows(url, folder, prompts)
    finally:
        server.terminate()
    print("| asked | server | embedforge |\n|---|---|---|")
    print("\n".join(f"| {asked} | {answered} | {made.replace('|', '/')} |" for asked, answered, made in rows))


if __name__ == "__main__":
    sys.exit(main())
