"""Chunks of documents, sized in the base model's own tokens and cut on paragraph and heading boundaries.

Paragraphs of one section are packed together up to `chunk_tokens`; a paragraph longer than that is cut
into windows. Each chunk after the first of a section repeats the last `overlap` tokens of the one
before it, so a sentence cut by a boundary is whole in one of the two.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from embedforge.config.corpus import CorpusConfig
from embedforge.documents import Block, Document
from embedforge.errors import EmbedforgeError
from embedforge.generation import SENTENCE_END
from embedforge.models import resolve_model_ref


@dataclass
class Chunk:
    chunk_id: str
    doc_id: str
    title: str
    text: str
    digest: str

    def row(self) -> dict:
        return asdict(self)


def tokenizer_folder(ref: str, revision: str | None = None) -> str:
    """Where a sentence-transformers model keeps its tokenizer: its root, or its Transformer module's folder."""
    root = Path(resolve_model_ref(ref))
    modules = root / "modules.json"
    if not root.is_dir() or (root / "tokenizer_config.json").exists() or not modules.exists():
        return str(root) if root.is_dir() else ref
    for module in json.loads(modules.read_text()):
        if module["type"].endswith("Transformer") and (root / module["path"] / "tokenizer_config.json").exists():
            return str(root / module["path"])
    raise EmbedforgeError(f"model {ref!r}: no tokenizer in {root}; corpus chunks are sized by the base model's tokens")


def load_tokenizer(ref: str, revision: str | None = None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(ref, revision), revision=revision)
    except OSError as exc:
        raise EmbedforgeError(f"model {ref!r}: its tokenizer could not be loaded ({exc})") from None
    # Only counted here, never fed to the model: no warning for a document longer than the model reads.
    tokenizer.model_max_length = 10**9
    return tokenizer


class Chunker:
    """Cuts documents with one tokenizer and one corpus section's sizes."""

    def __init__(self, tokenizer, config: CorpusConfig) -> None:
        self.tokenizer, self.config = tokenizer, config
        self.limit, self.overlap, self.least = config.chunk_tokens, config.overlap, config.min_chunk_tokens

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]

    def _windows(self, text: str) -> list[str]:
        """A paragraph longer than a chunk, cut into windows on word boundaries, overlapping by `overlap` tokens."""
        offsets = self._offsets(text)
        pieces = []
        start = 0
        while start < len(offsets):
            end = self._fitting_end(text, offsets, start)
            pieces.append(text[offsets[start][0] : offsets[end - 1][1]])
            if end == len(offsets):
                break
            start = self._word_start(text, offsets, max(end - self.overlap, start + 1), start)
        return pieces

    def _fitting_end(self, text: str, offsets: list, start: int) -> int:
        """The window's end: at most `chunk_tokens` tokens, pulled back to a word end, and re-counted to fit."""
        end = min(start + self.limit, len(offsets))
        while end < len(offsets) and end - start > 1 and offsets[end][0] == offsets[end - 1][1]:
            end -= 1  # the next token continues this word
        while end - start > 1 and len(self._offsets(text[offsets[start][0] : offsets[end - 1][1]])) > self.limit:
            end -= 1
        return end

    @staticmethod
    def _word_start(text: str, offsets: list, index: int, floor: int) -> int:
        while index > floor + 1 and offsets[index][0] > 0 and not text[offsets[index][0] - 1].isspace():
            index -= 1
        return index

    def _with_tail(self, previous: str, text: str) -> str:
        """The text after the last `overlap` tokens of the chunk before it, when both fit in one chunk."""
        offsets = self._offsets(previous)
        if not self.overlap or len(offsets) <= self.overlap:
            return text
        start = self._word_start(previous, offsets, len(offsets) - self.overlap, 0)
        joined = f"{previous[offsets[start][0] :]} {text}"
        return joined if len(self._offsets(joined)) <= self.limit else text

    def _count(self, text: str) -> int:
        return len(self._offsets(text))

    def _pieces(self, block: Block) -> list[tuple[str, str, bool]]:
        """(text, what joins it to the text before, whether it continues a window): the paragraph whole when it
        fits, else its sentences, and a sentence longer than a chunk in windows."""
        if self._count(block.text) <= self.limit:
            return [(block.text, "\n\n", False)]
        pieces = []
        for i, sentence in enumerate(SENTENCE_END.split(block.text)):
            parts = self._windows(sentence) if self._count(sentence) > self.limit else [sentence]
            pieces += [(part, "\n\n" if i == j == 0 else " ", j > 0) for j, part in enumerate(parts)]
        return pieces

    def _pack(self, blocks: list[Block]) -> list[str]:
        """The texts of one section's chunks: paragraphs, else sentences, else windows, packed while they fit."""
        texts, current = [], ""
        for block in blocks:
            for piece, joiner, continues in self._pieces(block):
                joined = f"{current}{joiner}{piece}" if current else piece
                if current and self._count(joined) > self.limit:
                    texts.append(current)
                    joined = piece if continues else self._with_tail(current, piece)  # windows overlap already
                current = joined
        return [*texts, current] if current else texts

    def chunks(self, document: Document) -> list[Chunk]:
        sections: list[tuple[tuple[str, ...], list[Block]]] = []
        for block in document.blocks:
            if sections and sections[-1][0] == block.headings:
                sections[-1][1].append(block)
            else:
                sections.append((block.headings, [block]))
        found = []
        for headings, blocks in sections:
            title = " > ".join(headings) or document.title or ""
            for text in self._pack(blocks):
                if len(self._offsets(text)) >= self.least:
                    digest = hashlib.sha256(f"{title}\x00{text}".encode()).hexdigest()[:16]
                    found.append(Chunk(f"{document.id}#{len(found)}", document.id, title, text, digest))
        return found


def chunk_rows(documents: list[Document], chunker: Chunker, progress=None) -> list[dict]:
    """Every document's chunks as rows, `progress.advance` told after each document; none at all is refused,
    naming the setting that dropped them."""
    rows = []
    for done, document in enumerate(documents, start=1):
        rows += [chunk.row() for chunk in chunker.chunks(document)]
        if progress:
            progress.advance(done)
    if not rows:
        config = chunker.config
        raise EmbedforgeError(
            f"corpus.path: {config.path}: {len(documents)} documents gave no chunk of at least "
            f"{config.min_chunk_tokens} tokens (corpus.min_chunk_tokens)"
        )
    return rows
