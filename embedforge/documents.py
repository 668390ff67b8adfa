"""Documents as the corpus stage reads them: each with an id, a title when it has one, its text, its blocks.

A block is a paragraph under its heading path (markdown headings, HTML h1-h6), the unit chunks are
packed from, so a chunk ends on a paragraph or heading boundary wherever the text has one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from embedforge.config.corpus import CorpusConfig
from embedforge.errors import EmbedforgeError
from embedforge.localfiles import confined_files

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".html", ".htm"}
TABLE_SUFFIXES = {".jsonl", ".parquet"}
SUFFIXES = TEXT_SUFFIXES | TABLE_SUFFIXES | {".pdf"}
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


@dataclass
class Block:
    """A paragraph and the headings above it."""

    text: str
    headings: tuple[str, ...] = ()


@dataclass
class Document:
    id: str
    text: str
    title: str | None = None
    blocks: list[Block] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.title}\x00{self.text}".encode()).hexdigest()[:16]


def document_files(location: str) -> list[Path]:
    """The document files a path names: a file, every document under a folder, or a glob."""
    target = Path(location).expanduser()
    files = confined_files(location, lambda p: p.suffix.lower() in SUFFIXES, "corpus.path")
    if not files:
        raise EmbedforgeError(f"corpus.path: no document at {target} (looked for {', '.join(sorted(SUFFIXES))})")
    unknown = [str(p) for p in files if p.suffix.lower() not in SUFFIXES]
    if unknown:
        raise EmbedforgeError(f"corpus.path: {unknown[0]}: not a document format embedforge reads ({sorted(SUFFIXES)})")
    return files


def _paragraphs(text: str, headings: tuple[str, ...] = ()) -> list[Block]:
    return [Block(p.strip(), headings) for p in re.split(r"\n\s*\n", text) if p.strip()]


def markdown_blocks(text: str) -> list[Block]:
    """Paragraphs under their heading path: '# A' then '## B' puts what follows under (A, B)."""
    blocks, path, lines = [], [], []
    for line in text.splitlines() + ["# "]:
        match = HEADING.match(line) if line.strip() != "#" else None
        if match or line == "# ":
            blocks += _paragraphs("\n".join(lines), tuple(path))
            lines = []
            if match:
                level = len(match.group(1))
                path = [*path[: level - 1], match.group(2)]
            continue
        lines.append(line)
    return blocks


class _HTMLText(HTMLParser):
    """The text of an HTML page by block: headings start a new path, scripts and styles are dropped."""

    BLOCKS = {"p", "div", "li", "br", "tr", "section", "article", "pre", "blockquote", "td"}

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.title, self._skip, self._in_title = None, 0, False

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")
        self._in_title = tag == "title"
        if tag in self.BLOCKS or re.fullmatch(r"h[1-6]", tag):
            self.lines.append("\n\n" + ("#" * int(tag[1]) + " " if re.fullmatch(r"h[1-6]", tag) else ""))

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0
        self._in_title = False if tag == "title" else self._in_title
        if re.fullmatch(r"h[1-6]", tag):
            self.lines.append("\n\n")

    def handle_data(self, data):
        if self._in_title:
            self.title = data.strip() or self.title
        elif not self._skip:
            self.lines.append(re.sub(r"\s+", " ", data))


def _text(path: Path) -> str:
    """A text document's content; a binary file (a NUL byte) or one that is not UTF-8 is refused by name."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise EmbedforgeError(f"corpus.path: {path}: a binary file, not text ({path.suffix} names a text format)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EmbedforgeError(f"corpus.path: {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def html_document(path: Path, doc_id: str) -> Document:
    parser = _HTMLText()
    parser.feed(_text(path))
    markdown = re.sub(r"\n{3,}", "\n\n", "".join(parser.lines)).strip()
    blocks = markdown_blocks(markdown)
    return Document(doc_id, "\n\n".join(b.text for b in blocks), parser.title, blocks)


def pdf_document(path: Path, doc_id: str) -> Document:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise EmbedforgeError(f"corpus.path: {path}: PDF needs pypdf: pip install 'embedforge[pdf]'") from None
    from pypdf.errors import PyPdfError

    try:
        text = "\n\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)
    except (PyPdfError, ValueError, KeyError, TypeError, AssertionError) as exc:  # what a damaged file raises
        raise EmbedforgeError(f"corpus.path: {path}: not a readable PDF ({type(exc).__name__}: {exc})") from None
    return Document(doc_id, text, path.stem, _paragraphs(text))


def _text_document(path: Path, doc_id: str) -> Document:
    text = _text(path)
    if path.suffix.lower() in (".md", ".markdown"):
        blocks = markdown_blocks(text)
        title = next((b.headings[0] for b in blocks if b.headings), None)
        return Document(doc_id, text, title, blocks)
    return Document(doc_id, text, None, _paragraphs(text))


def _table_documents(path: Path, config: CorpusConfig, root: Path) -> list[Document]:
    """One document per row; the text column is required, id and title columns are used when present."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True, dtype=False)
    except (ValueError, OSError) as exc:  # broken JSON, a damaged parquet file (pyarrow's errors are ValueErrors)
        raise EmbedforgeError(f"corpus.path: {path}: cannot read it ({exc})") from None
    if config.text_column not in frame.columns:
        raise EmbedforgeError(
            f"corpus.text_column: {path} has no column {config.text_column!r}; it has {list(frame.columns)}"
        )
    documents = []
    for number, row in enumerate(frame.to_dict("records"), start=1):
        text = row[config.text_column]
        if not isinstance(text, str):
            raise EmbedforgeError(f"corpus: {path}, row {number}: {config.text_column!r} is not text ({text!r:.40})")
        doc_id = str(row.get(config.id_column) or "") if config.id_column else ""
        title = row.get(config.title_column) if config.title_column else None
        documents.append(Document(doc_id or f"{path.relative_to(root)}#{number}", text, title, _paragraphs(text)))
    return documents


def read_documents(config: CorpusConfig) -> list[Document]:
    """Every document the corpus path names, each with its id (its path, or its row's id) and blocks."""
    files = document_files(config.path)
    target = Path(config.path).expanduser()
    root = target if target.is_dir() else files[0].parent
    documents: list[Document] = []
    for path in files:
        doc_id = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        suffix = path.suffix.lower()
        if suffix in TABLE_SUFFIXES:
            documents += _table_documents(path, config, root)
        elif suffix in (".html", ".htm"):
            documents.append(html_document(path, doc_id))
        elif suffix == ".pdf":
            documents.append(pdf_document(path, doc_id))
        else:
            documents.append(_text_document(path, doc_id))
    return [document for document in documents if document.text.strip()]
