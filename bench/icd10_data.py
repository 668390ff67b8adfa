"""A second retrieval benchmark, in a domain far from the demo's Python docs: clinical terms to ICD-10-CM codes.

The ICD-10-CM tabular list (shipped by the PyPI package simple-icd-10-cm, US public domain) gives most codes
*inclusion terms*: the other names clinicians write for the same condition ("Salmonellosis" under A02.0
"Salmonella enteritis"). Each (inclusion term -> code description) is a real query/passage pair, and the
three-character category (A02) is the group a held-out split keeps whole. Codes of one category are
near-paraphrases of each other ("Salmonella meningitis", "Salmonella pneumonia"), the case where mined
negatives are most often false ones.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/icd10_data.py        # writes bench/data/icd10-cm.jsonl
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from importlib.resources import files
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "icd10-cm.jsonl"
CATEGORIES = 180  # of about 1,450 with inclusion terms: ~1,600 pairs, a run of a few minutes on 2 cores
SEED = 7


def pairs() -> list[dict]:
    """Every (inclusion term, code description) pair of the tabular list, with its category."""
    data = files("simple_icd_10_cm") / "data"
    tabular = next(path for path in data.iterdir() if path.name.startswith("icd10c-tabular"))
    rows = []
    for diag in ET.parse(str(tabular)).getroot().iter("diag"):
        code, description = diag.findtext("name"), diag.findtext("desc")
        for note in diag.findall("inclusionTerm/note"):
            term = " ".join(note.text.split())
            # "Conditions classifiable to D07" points elsewhere in the list; it is not a name of the condition.
            if term.lower() != description.lower() and not term.startswith("Conditions classifiable"):
                rows.append({"anchor": term, "positive": description, "code": code, "category": code[:3]})
    return rows


def main() -> None:
    rows = pairs()
    categories = sorted({row["category"] for row in rows})
    kept = set(random.Random(SEED).sample(categories, CATEGORIES))
    chosen = [row for row in rows if row["category"] in kept]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("".join(json.dumps(row) + "\n" for row in chosen))
    print(f"{OUT}: {len(chosen)} pairs of {len(kept)} categories (of {len(rows)} pairs, {len(categories)})")


if __name__ == "__main__":
    main()
