"""Rounds: the fine-tuned model re-judges and re-mines the generated pairs, and a round is kept only beyond noise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_corpus import _corpus_recipe, write_docs

from embedforge.flows.finetune import finetune
from embedforge.recipe import Recipe


def _rounds_table(card: str) -> list[tuple[int, int, float, str, bool]]:
    """(round, training pairs, eval figure, interval versus the round kept before, kept) per row of the card."""
    section = card.split("### Rounds", 1)[1].split("###", 1)[0]
    found = re.findall(r"^\| (\*\*)?(\d+)(?:\*\*)? \| (\d+) \| ([\d.]+) \| (-|\[[^\]]+\]) \|$", section, re.M)
    return [(int(n), int(pairs), float(figure), ci, bool(bold)) for bold, n, pairs, figure, ci in found]


@pytest.mark.usefixtures("prefect_server")
def test_a_later_round_replaces_the_one_kept_only_beyond_the_noise(tiny_model, tmp_path):
    recipe = _corpus_recipe(tiny_model, write_docs(tmp_path / "docs"), tmp_path)
    # Every pair passes the first filter: a tiny model's judges keep a share that varies run to run, and the rounds
    # need pairs to train on; what a round's judge drops is the round trip's own test (test_corpus).
    recipe["corpus"]["filter"].update(round_trip_k=30, round_trip_model="base")
    recipe["corpus"]["rounds"] = 3
    recipe["mine"] = {"num_negatives": 1}
    recipe["train"]["args"]["num_train_epochs"] = 3
    run = finetune(recipe=Recipe.model_validate(recipe), output_dir=str(tmp_path / "runs"))

    run_dir = Path(run.run_dir)
    rows = _rounds_table((Path(run.model_dir) / "README.md").read_text())
    assert [n for n, *_ in rows][:2] == [1, 2] and len(rows) <= 3, rows
    (kept,) = [n for n, *_, bold in rows if bold]
    # Each later round was judged and mined by the round kept before it, and trained on no more pairs.
    assert all(later[1] <= rows[0][1] for later in rows[1:])
    assert (run_dir / "rounds" / "2" / "data" / "mined" / "train.parquet").exists()
    # A round replaced the one before only when the interval of the difference lay above 0; the first that did not
    # ended the rounds.
    for n, _, _, ci, bold in rows[1:]:
        assert (float(ci.strip("[]").split(",")[0]) > 0) == bold or (not bold and n == rows[-1][0]), rows
    assert run.model_dir == str(run_dir / "model" if kept == 1 else run_dir / "rounds" / str(kept) / "model")
    assert (run_dir / "model" / "model.safetensors").exists()  # the first round's model is never rewritten
    assert not (run_dir / "data" / "splits" / "train-and-eval.parquet").exists()  # the rounds read the eval split
