"""Build the documents demo corpus: one markdown page per Python standard-library module, from its docstrings.

Every CPython ships these docstrings under the PSF License, which allows redistribution, so the demo
needs no download. A page is the module's docstring, then a section (`## name`) per public function
or class with its signature and docstring: documents with headings, as a team's own docs are.

    python deployments/data/build_python_corpus.py deployments/data/python-modules
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from pathlib import Path

MODULES = (
    "argparse base64 bisect calendar collections contextlib copy csv dataclasses datetime difflib enum "
    "fractions functools gzip heapq hmac html inspect ipaddress itertools json logging operator pathlib "
    "pickle pprint queue random secrets shlex shutil statistics string struct tarfile tempfile textwrap "
    "threading timeit uuid zipfile"
).split()
MAX_SECTIONS = 12
MAX_SECTION_CHARS = 1500


def _section(name: str, obj) -> str | None:
    doc = inspect.getdoc(obj)
    if not doc or len(doc.split()) < 8:
        return None
    try:
        signature = f"`{name}{inspect.signature(obj)}`\n\n"
    except (TypeError, ValueError):
        signature = ""
    return f"## {name}\n\n{signature}{doc[:MAX_SECTION_CHARS]}\n"


def page(module_name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module(module_name)
    sections = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and (text := _section(name, obj)):
            sections.append(text)
    intro = inspect.getdoc(module) or ""
    return f"# {module_name}\n\n{intro}\n\n" + "\n".join(sections[:MAX_SECTIONS])


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name in MODULES:
        (out / f"{name}.md").write_text(page(name), encoding="utf-8")
    print(f"{len(MODULES)} pages in {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
