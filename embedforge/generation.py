"""Queries made for a chunk: by an LLM, by its lead sentence, by Contriever's independent cropping, or by the
inverse cloze task.

What a chunk gets depends only on the chunk and the settings, never on the run: the same chunk gets
the same queries back from the cache (`<output>/.cache/queries/`), so a rerun pays only for new or
changed chunks.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from pathlib import Path

from embedforge.config.corpus import GenerateConfig, LLMConfig, fill_prompt

# Chinese and Japanese end a sentence with 。！？ and no space after it.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*")
MIN_SENTENCE_WORDS = 4
# In a script written without spaces (Chinese, Japanese), each character counts as a word: a whole sentence there
# is one whitespace-separated token, and would be too short for every method.
UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
WORD = re.compile(rf"[{UNSPACED}]|[^\s{UNSPACED}]+")
LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)]|q\d*[:.)]|query\s*\d*\s*[:.)])\s*", re.IGNORECASE)
THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)  # reasoning models (Qwen3, DeepSeek-R1) reason first


def cache_key(digest: str, config: GenerateConfig) -> str:
    """What a chunk's queries depend on: its content, the method and every setting that changes the answer."""
    settings: dict = {"method": config.method, "n": config.queries_per_chunk}
    if config.llm:
        settings |= config.llm.model_dump(include={"base_url", "model", "prompt", "temperature", "max_tokens"})
    else:
        settings["seed"] = config.seed
    return hashlib.sha256(json.dumps([digest, settings], sort_keys=True).encode()).hexdigest()


class QueryCache:
    """One small JSON file per chunk and settings, under a folder every worker sees."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, key: str, entry: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{random.getrandbits(32):08x}.part")
        partial.write_text(json.dumps(entry))
        partial.replace(path)  # a reader never sees half an entry


def _rng(config: GenerateConfig, digest: str) -> random.Random:
    return random.Random(f"{config.seed}:{digest}")


def crop_pairs(text: str, config: GenerateConfig, digest: str) -> list[tuple[str, str]]:
    """Contriever's independent cropping: two random spans of 10-50 % of the chunk's words are a pair."""
    words, rng = [match.span() for match in WORD.finditer(text)], _rng(config, digest)
    if len(words) < 8:
        return []

    def span() -> str:
        size = max(2, math.ceil(len(words) * rng.uniform(0.1, 0.5)))
        start = rng.randrange(0, len(words) - size + 1)
        return " ".join(text[words[start][0] : words[start + size - 1][1]].split())

    return [(span(), span()) for _ in range(config.queries_per_chunk)]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text.strip()) if s.strip()]


def _words(text: str) -> int:
    return len(WORD.findall(text))


def _joined(sentences: list[str]) -> str:
    """Sentences put back together: with a space, except after a sentence of a script that uses none."""
    return "".join(s if i == len(sentences) - 1 or s[-1] in "。！？" else f"{s} " for i, s in enumerate(sentences))


def lead_pairs(text: str, config: GenerateConfig, digest: str) -> list[tuple[str, str]]:
    """The lead: a chunk's first sentence is the query, the rest of the chunk the passage.

    A first sentence says what the rest is about, as a docstring's or a section's opening line does, which is
    nearer a question about the passage than a sentence drawn at random from its middle (bench/RESULTS.md). With
    `corpus.overlap` above 0, a chunk that continues a section starts with the end of the one before, and that is
    its lead: the documents recipe sets overlap 0.
    """
    sentences = _sentences(text)
    if not sentences or _words(sentences[0]) < MIN_SENTENCE_WORDS:
        return []
    rest = _joined(sentences[1:])
    return [(sentences[0], rest)] if _words(rest) >= MIN_SENTENCE_WORDS else []


def inverse_cloze_pairs(text: str, config: GenerateConfig, digest: str) -> list[tuple[str, str]]:
    """The inverse cloze task: one sentence is the query, the rest of its chunk the passage."""
    sentences = _sentences(text)
    # A fragment (the overlap a chunk repeats from the one before) is no question anyone asks.
    candidates = [i for i, sentence in enumerate(sentences) if _words(sentence) >= MIN_SENTENCE_WORDS]
    rng = _rng(config, digest)
    picked = rng.sample(candidates, min(config.queries_per_chunk, len(candidates)))
    pairs = [(sentences[i], _joined(sentences[:i] + sentences[i + 1 :])) for i in picked]
    return [(query, rest) for query, rest in pairs if _words(rest) >= MIN_SENTENCE_WORDS]


def prompt_for(config: LLMConfig, text: str, title: str, n: int) -> str:
    return fill_prompt(config.prompt, text=text, title=f"{title}\n" if title else "", n=n)


def parse_queries(reply: str, n: int) -> list[str]:
    """The queries in a reply, as instruction-tuned models write them: one per line (numbering, bullets, quotes and
    `Query 1:` taken off), a JSON array, or either inside a code fence; a lead-in line ("Here are 3 queries:") and
    a `<think>` block are not queries. At most n."""
    reply = THINKING.sub("", reply).strip()
    unfenced = "\n".join(line for line in reply.splitlines() if not line.strip().startswith("```"))
    found: list[str] = []
    for query in _json_list(unfenced) or [LIST_MARK.sub("", LIST_MARK.sub("", line)) for line in unfenced.splitlines()]:
        query = query.strip().strip("*_").strip().strip("\"'“”").strip()
        if query and not query.endswith(":") and query not in found:
            found.append(query)
    return found[:n]


def _json_list(text: str) -> list[str] | None:
    """The strings of a JSON array reply (or of the first list in a JSON object); None when it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, list)), None)
    return [str(item) for item in value if isinstance(item, str | int | float)] if isinstance(value, list) else None
