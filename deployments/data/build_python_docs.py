"""Build the demo retrieval dataset from the docstrings of Python's standard library.

Every CPython ships these docstrings under the PSF License, which allows
redistribution, so the demo needs no download. Each pair is
``anchor`` = a docstring's summary line (what a user would ask for) and
``positive`` = the object's signature and the rest of its docstring (the passage
that answers it). The summary is left out of the passage so that retrieval is not a
string match.

    python deployments/data/build_python_docs.py deployments/data/python-docs.jsonl
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import warnings

MODULES = (
    "argparse asyncio base64 bisect calendar collections contextlib copy csv dataclasses "
    "datetime decimal difflib email enum fractions functools gzip hashlib heapq hmac html "
    "http.client inspect io ipaddress itertools json logging math mimetypes operator os "
    "os.path pathlib pickle pprint queue random re secrets shlex shutil socket sqlite3 "
    "statistics string struct subprocess tarfile tempfile textwrap threading time timeit "
    "typing unittest urllib.parse uuid warnings zipfile zlib abc ast codecs configparser "
    "concurrent.futures fnmatch ftplib getopt gettext glob imaplib locale mailbox "
    "multiprocessing numbers optparse platform poplib pydoc sched selectors shelve smtplib "
    "ssl symtable sysconfig tokenize trace traceback types unittest.mock urllib.request "
    "wave weakref xml.dom.minidom xml.etree.ElementTree zipimport email.message "
    "email.utils http.server http.cookiejar logging.handlers asyncio.streams"
).split()

MIN_SUMMARY_WORDS = 4
MIN_BODY_WORDS = 10
MAX_BODY_CHARS = 1200


def _pairs_from(obj, qualname: str):
    doc = inspect.getdoc(obj)
    if not doc:
        return
    summary, _, body = doc.partition("\n\n")
    summary, body = " ".join(summary.split()), body.strip()
    if len(summary.split()) < MIN_SUMMARY_WORDS or len(body.split()) < MIN_BODY_WORDS:
        return
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = ""
    yield {
        "anchor": summary,
        "positive": f"{qualname}{signature}\n{body[:MAX_BODY_CHARS]}",
        "module": qualname.split(".")[0],
    }


def _walk(module_name: str):
    try:
        module = importlib.import_module(module_name)
    except ImportError:  # modules come and go between Python versions
        return
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", module_name) != module.__name__:
            continue
        if inspect.isclass(obj):
            yield from _pairs_from(obj, f"{module_name}.{name}")
            for attr, member in sorted(vars(obj).items()):
                if not attr.startswith("_") and inspect.isfunction(member):
                    yield from _pairs_from(member, f"{module_name}.{name}.{attr}")
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            yield from _pairs_from(obj, f"{module_name}.{name}")


def main(out_path: str) -> None:
    seen: set[str] = set()
    rows = []
    warnings.simplefilter("ignore")
    for module_name in MODULES:
        for row in _walk(module_name):
            if row["anchor"] not in seen:
                seen.add(row["anchor"])
                rows.append(row)
    with open(out_path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} pairs from {len(MODULES)} modules -> {out_path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "deployments/data/python-docs.jsonl")
