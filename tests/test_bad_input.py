"""A careless user's mistakes, each through the CLI: one clear line naming the file, field or row, no traceback,
and the release already published left exactly as it was.

Most are refused by `embedforge validate` alone, before anything trains; the rest by `embedforge run`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from test_corpus import write_docs

from conftest import cli, embedded_env, make_pairs, write_jsonl


@dataclass
class Case:
    id: str
    change: Callable[[dict, Path], Path | None]  # edits the recipe (or writes files); may return another recipe path
    expected: str  # "{recipe}" stands for the recipe file's path
    env: dict[str, str] = field(default_factory=dict)
    absent: str = ""  # a value the refusal must not show (a password it names the field of)


def _set(path: str, value) -> Callable[[dict, Path], None]:
    def change(recipe: dict, root: Path) -> None:
        *parents, leaf = path.split(".")
        node = recipe
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value(root) if callable(value) else value

    return change


def _both(*changes) -> Callable[[dict, Path], None]:
    def change(recipe: dict, root: Path) -> None:
        for one in changes:
            one(recipe, root)

    return change


def _recipe_file(content: bytes | str | None) -> Callable[[dict, Path], Path]:
    def change(recipe: dict, root: Path) -> Path:
        path = root / "bad-recipe.yaml"
        if content is None:
            path.mkdir()
        else:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    return change


def _data(rows: list[dict], raw: bytes = b"") -> Callable[[dict, Path], None]:
    def change(recipe: dict, root: Path) -> None:
        path = write_jsonl(root / "bad.jsonl", rows)
        with open(path, "ab") as handle:
            handle.write(raw)
        recipe["ingest"]["path"] = str(path)

    return change


def _recipe_yaml_with(extra: str) -> Callable[[dict, Path], Path]:
    """The recipe as YAML, with `extra` appended: a second section of the same name, say."""

    def change(recipe: dict, root: Path) -> Path:
        path = root / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False) + extra)
        return path

    return change


def _with_latest_folder(published: Path) -> str:
    (published / "latest").mkdir(parents=True)  # someone copied a release there by hand
    return str(published)


def _corpus(**corpus) -> Callable[[dict, Path], None]:
    """The recipe made a documents recipe: markdown pages in root/docs, plus what `corpus` sets or writes there."""

    def change(recipe: dict, root: Path) -> None:
        docs = write_docs(root / "docs")
        files = corpus.pop("files", {})
        for name, content in files.items():
            target = docs / name
            if isinstance(content, Path):
                target.symlink_to(content)
            else:
                target.write_bytes(content)
        recipe["ingest"] = {"name": "docs", "keep": ["doc_id"]}
        recipe["split"] = {"group_by": "doc_id", "eval_size": 0.1, "test_size": 0.3, "seed": 3}
        generate = corpus.pop("generate", {"method": "inverse_cloze"})
        settings = {"chunk_tokens": 48, "overlap": 8, "min_chunk_tokens": 8, "filter": {"round_trip_k": None}}
        recipe["corpus"] = {"path": str(docs), **settings, "generate": generate, **corpus}
        recipe["evaluate"] = {"gates": {}}

    return change


def _outside(root: Path) -> Path:
    """A file outside every folder the recipe names, as /etc/passwd would be."""
    (root / "private").mkdir(exist_ok=True)
    (root / "private" / "credentials.txt").write_text("user: admin\npassword: hunter2 hunter2 hunter2\n")
    return root / "private" / "credentials.txt"


def _llm(base_url: str, **settings) -> dict:
    return {"method": "llm", "llm": {"base_url": base_url, "model": "m", **settings}}


def _with_link_out(recipe: dict, root: Path) -> None:
    folder = root / "pairs-folder"
    write_jsonl(folder / "a.jsonl", make_pairs(60))
    (folder / "b.jsonl").symlink_to(write_jsonl(root / "private" / "other-team.jsonl", make_pairs(60, seed=5)))
    recipe["ingest"]["path"] = str(folder)


def _rows(rows: list[dict], name: str = "bad.jsonl") -> Callable[[dict, Path], None]:
    def change(recipe: dict, root: Path) -> None:
        recipe["ingest"]["path"] = str(write_jsonl(root / name, rows))

    return change


def _mixed_folder(recipe: dict, root: Path) -> None:
    write_jsonl(root / "mixed" / "a.jsonl", make_pairs(60))
    (root / "mixed" / "b.csv").write_text("question,context,topic\nq,c,t\n")
    recipe["ingest"]["path"] = str(root / "mixed")


def _csv_bad_row_deep(recipe: dict, root: Path) -> None:
    rows = make_pairs(200)
    lines = ["question,context,topic"] + [
        f"{r['question']},{r['context'].replace(',', ' ')},{r['topic']}" for r in rows
    ]
    data = ("\n".join(lines[:151]) + "\n").encode() + "caf\u00e9?,x,t\n".encode("latin-1")
    (root / "deep.csv").write_bytes(data + ("\n".join(lines[151:]) + "\n").encode())
    recipe["ingest"]["path"] = str(root / "deep.csv")


def _general_is_the_training_file(recipe: dict, root: Path) -> None:
    recipe["evaluate"] = {"general": [{"name": "faq", **{k: recipe["ingest"][k] for k in ("path", "columns")}}]}


def _latin1_first_row(recipe: dict, root: Path) -> None:
    (root / "latin1.jsonl").write_bytes('{"question": "caf\u00e9?", "context": "x", "topic": "t"}\n'.encode("latin-1"))
    recipe["ingest"]["path"] = str(root / "latin1.jsonl")


VALIDATE = [
    Case(
        "misspelled-trainer-arg",
        _set("train.args.learning_rat", 1e-5),
        "{recipe}: train.args.learning_rat: unknown key — did you mean learning_rate?",
    ),
    Case(
        "misspelled-section-key",
        _set("ingest.colums", {}),
        "{recipe}: ingest.colums: unknown key — did you mean columns?",
    ),
    Case("unknown-section", _set("trian", {}), "{recipe}: trian: unknown key — did you mean train?"),
    Case(
        "unknown-loss",
        _set("train.loss.name", "MultipleNegativeRankingLoss"),
        "{recipe}: train.loss: unknown loss 'MultipleNegativeRankingLoss'",
    ),
    Case(
        "loss-arg-typo",
        _set("train.loss.args", {"scal": 20}),
        "{recipe}: train.loss.args.scal: not an argument of MultipleNegativesRankingLoss",
    ),
    Case(
        "negative-learning-rate",
        _set("train.args.learning_rate", -1e-5),
        "{recipe}: train.args.learning_rate: must be greater than 0",
    ),
    Case(
        "zero-epochs",
        _set("train.args.num_train_epochs", 0),
        "{recipe}: train.args.num_train_epochs: must be greater than 0",
    ),
    Case(
        "epochs-not-a-number",
        _set("train.args.num_train_epochs", "many"),
        "{recipe}: train.args.num_train_epochs: Input should be a valid number",
    ),
    Case(
        "zero-batch-size",
        _set("train.args.per_device_train_batch_size", 0),
        "{recipe}: train.args.per_device_train_batch_size: must be greater than 0",
    ),
    Case(
        "bad-scheduler-choice",
        _set("train.args.lr_scheduler_type", "sawtooth"),
        "{recipe}: train.args: sawtooth is not a valid SchedulerType",
    ),
    Case(
        "reserved-output-dir",
        _set("train.args.output_dir", "/tmp/x"),
        "{recipe}: train.args.output_dir: set by embedforge",
    ),
    Case(
        "eval-strategy-without-eval-split",
        _both(_set("train.args.eval_strategy", "steps"), _set("split.eval_size", 0.0)),
        "{recipe}: train.args.eval_strategy: evaluation during training needs an eval split",
    ),
    Case(
        "misspelled-key-in-a-list-item",
        _set("mine.choose", [{"relative_margin": 0.1}, {"range_maxx": 100}]),
        "{recipe}: mine.choose[1].range_maxx: unknown key — did you mean range_max?",
    ),
    Case(
        "empty-window-in-a-list-item",
        _set("mine.choose", [{"range_min": 5, "range_max": 3}]),
        "{recipe}: mine.choose[0].range_max: 3 must be above range_min (5)",
    ),
    Case(
        "unnamed-general-set",
        _set("evaluate.general", [{"path": "data/pairs.jsonl"}]),
        "{recipe}: evaluate.general[0].name: give each general set a name (it prefixes its metrics)",
    ),
    Case(
        "general-set-named-like-the-domain",
        _set("evaluate.general", [{"name": "tiny_validation", "path": "data/pairs.jsonl"}]),
        "{recipe}: evaluate.general: ['tiny_validation'] also names the domain's data; name the general set apart",
    ),
    Case(
        "general-drop-without-a-general-set",
        _set("evaluate.max_general_drop", 0.02),
        "{recipe}: evaluate.max_general_drop: there is no evaluate.general set to measure the drop on",
    ),
    Case(
        "general-set-missing-file",
        _set("evaluate.general", [{"name": "faq", "path": "data/faq.jsonl"}]),
        "{recipe}: evaluate.general[0].path: no data file at",
    ),
    Case(
        "merge-weight-of-nothing",
        _set("merge", {"weights": [0, 0.5]}),
        "{recipe}: merge.weights: [0.0, 0.5]: each weight is the fine-tuned model's share, above 0 and at most 1",
    ),
    Case(
        "merge-without-an-eval-split",
        _both(_set("merge", {}), _set("split.eval_size", 0)),
        "{recipe}: merge: the candidates are compared on the eval split, and this recipe has none",
    ),
    Case(
        "ascending-matryoshka-dims",
        _set("train.loss.matryoshka_dims", [8, 16, 32]),
        "{recipe}: train.loss.matryoshka_dims: [8, 16, 32] must be positive and strictly descending",
    ),
    Case(
        "matryoshka-dims-above-model-size",
        _set("train.loss.matryoshka_dims", [64, 16]),
        "{recipe}: train.loss.matryoshka_dims: [64] exceed the model's dimension 32",
    ),
    Case(
        "matryoshka-weights-count",
        _set("train.loss", {"matryoshka_dims": [32, 16], "matryoshka_weights": [1]}),
        "{recipe}: train.loss: matryoshka_weights needs one weight per matryoshka_dims entry",
    ),
    Case(
        "ascending-evaluate-dims",
        _set("evaluate.matryoshka_dims", [8, 32]),
        "{recipe}: evaluate.matryoshka_dims: [8, 32] must be positive and strictly descending",
    ),
    Case(
        "missing-data-file",
        _set("ingest.path", lambda root: str(root / "absent.jsonl")),
        "{recipe}: ingest.path: no data file at",
    ),
    Case(
        "mapped-column-absent",
        _set("ingest.columns", {"anchor": "query", "positive": "context"}),
        "{recipe}: ingest.columns: the data has no column 'query'",
    ),
    Case(
        "kept-column-absent",
        _set("ingest.keep", ["chapter"]),
        "{recipe}: ingest.columns: the data has no column 'chapter'",
    ),
    Case(
        "where-column-absent",
        _set("ingest.where", {"lang": "en"}),
        "{recipe}: ingest.columns: the data has no column 'lang'",
    ),
    Case(
        "group-by-not-kept",
        _set("split.group_by", "chapter"),
        "{recipe}: split.group_by: column 'chapter' does not reach the split; add it to ingest.keep",
    ),
    Case(
        "path-env-unset",
        _both(_set("ingest.path", None), _set("ingest.path_env", "EMBEDFORGE_NOT_SET")),
        "{recipe}: ingest.path_env: environment variable EMBEDFORGE_NOT_SET is not set",
    ),
    Case(
        "two-data-sources",
        _set("ingest.dataset", "org/pairs"),
        "{recipe}: ingest: give exactly one of path, path_env or dataset",
    ),
    Case(
        "label-map-on-retrieval",
        _set("ingest.label_map", {0: 1}),
        "{recipe}: ingest.label_map: rewrites label or score values",
    ),
    Case(
        "unknown-standard-column",
        _set("ingest.columns", {"query": "question"}),
        "{recipe}: ingest.columns: ['query'] are not retrieval columns",
    ),
    Case("data-not-utf8", _latin1_first_row, "latin1.jsonl, row 1: not UTF-8 text; save it as UTF-8"),
    Case(
        "missing-test-file",
        _set("split", lambda root: {"test_file": str(root / "test.jsonl")}),
        "{recipe}: split.test_file: no data file at",
    ),
    Case(
        "test-file-and-eval-sources",
        _both(_set("split.test_file", "t.jsonl"), _set("split.eval_sources", [{"name": "x", "path": "x.jsonl"}])),
        "{recipe}: split.test_file/eval_file: give these or eval_sources, not both",
    ),
    Case(
        "same-eval-source-names",
        _set("split.eval_sources", [{"path": "a.jsonl"}, {"path": "b.jsonl"}]),
        "{recipe}: split.eval_sources: give each source its own name",
    ),
    Case("test-size-too-large", _set("split.test_size", 1.5), "{recipe}: split.test_size: Input should be less than 1"),
    Case(
        "no-rows-left-for-training",
        _set("split", {"eval_size": 0.5, "test_size": 0.5}),
        "{recipe}: split: eval_size + test_size must leave rows for training",
    ),
    Case(
        "base-model-folder-missing",
        _set("train.base_model", lambda root: str(root / "no-model")),
        "{recipe}: train.base_model: model '",
    ),
    Case(
        "base-model-package-missing",
        _set("train.base_model", "pkg:no_such_package/model"),
        "{recipe}: train.base_model: model 'pkg:no_such_package/model': Python package 'no_such_package' is not installed",
    ),
    Case(
        "base-model-not-cached-offline",
        _set("train.base_model", "acme/no-such-model"),
        "{recipe}: train.base_model: model 'acme/no-such-model': not in the local Hugging Face cache",
    ),
    Case(
        "unknown-gate-metric",
        _set("evaluate.gates", {"cosine_ndgc@10": 0.5}),
        "{recipe}: evaluate.gates.cosine_ndgc@10: no evaluator reports 'cosine_ndgc@10' — did you mean cosine_ndcg@10?",
    ),
    Case(
        "unknown-headline",
        _set("evaluate.headline", "accuracy@100"),
        "{recipe}: evaluate.headline: no evaluator reports 'accuracy@100'",
    ),
    Case(
        "local-dir-under-a-file",
        _set("push.local_dir", lambda root: str(root / "data" / "pairs.jsonl" / "published")),
        "{recipe}: push.local_dir: ",
    ),
    Case(
        "hub-push-without-token",
        _both(_set("push.local_dir", None), _set("push.repo_id", "acme/model")),
        "{recipe}: push.repo_id: publishing to the Hub needs a token: set HF_TOKEN or push.token_secret",
    ),
    Case(
        "hub-push-while-offline",
        _both(_set("push.local_dir", None), _set("push.repo_id", "acme/model")),
        "{recipe}: push.repo_id: HF_HUB_OFFLINE is set",
        env={"HF_TOKEN": "hf_x"},
    ),
    Case(
        "repo-and-local-dir", _set("push.repo_id", "acme/model"), "{recipe}: push: give repo_id or local_dir, not both"
    ),
    Case(
        "bad-cron",
        _set("deployment.schedule", {"cron": "0 25 * * *"}),
        "{recipe}: deployment.schedule.cron: Invalid cron string",
    ),
    Case(
        "bad-timezone",
        _set("deployment.schedule", {"cron": "0 3 * * 1", "timezone": "Mars/Olympus"}),
        "{recipe}: deployment.schedule.timezone:",
    ),
    Case("bad-name", _set("name", "My Model"), "{recipe}: name: String should match pattern"),
    Case("recipe-is-a-folder", _recipe_file(None), "{recipe}: is a folder; give a recipe file"),
    Case(
        "recipe-not-utf8",
        _recipe_file("name: caf\u00e9\n".encode("latin-1")),
        "{recipe}: not UTF-8 text (byte 9); save the recipe as UTF-8",
    ),
    Case("recipe-not-yaml", _recipe_file("train: [unclosed\n"), "{recipe}: not valid YAML"),
    Case("recipe-is-a-list", _recipe_file("- ingest\n- train\n"), "{recipe}: a recipe is a YAML mapping of sections"),
    Case("recipe-missing", lambda recipe, root: root / "absent.yaml", "{recipe}: no such recipe file"),
    # What a recipe means, not only its shape.
    Case(
        "duplicate-section",
        _recipe_yaml_with("split:\n  test_size: 0.3\n"),
        "{recipe}: line 31: duplicate key 'split' (first on line 21); YAML keeps only the last one",
    ),
    Case(
        "nan-learning-rate",
        _set("train.args.learning_rate", float("nan")),
        "{recipe}: train.args.learning_rate: not a finite number",
    ),
    Case(
        "nan-gate", _set("evaluate.gates", {"gain": float("nan")}), "{recipe}: evaluate.gates.gain: not a finite number"
    ),
    Case("infinite-test-size", _set("split.test_size", float("inf")), "{recipe}: split.test_size: not a finite number"),
    Case(
        "test-file-and-test-size",
        _set("split", lambda root: {"test_file": str(root / "data" / "pairs.jsonl"), "test_size": 0.2}),
        "{recipe}: split.test_size: test_file is used whole as the test split, so test_size would be ignored",
    ),
    Case(
        "six-field-cron",
        _set("deployment.schedule", {"cron": "0 0 4 * * 1"}),
        "{recipe}: deployment.schedule.cron: '0 0 4 * * 1' has 6 fields; give five",
    ),
    Case(
        "loss-arg-of-the-wrong-type",
        _set("train.loss.args", {"scale": "twenty"}),
        "{recipe}: train.loss.args.scale: 'twenty' is not a float",
    ),
    Case(
        "score-loss-on-retrieval-pairs",
        _set("train.loss.name", "CoSENTLoss"),
        "{recipe}: train.loss.name: CoSENTLoss needs a score per pair (similarity data); ingest.kind is retrieval",
    ),
    Case(
        "prompt-for-a-missing-column",
        _set("train.args.prompts", {"query": "query: "}),
        "{recipe}: train.args.prompts: no column 'query' in retrieval data",
    ),
    Case(
        "inverted-mining-window",
        _set("mine", {"range_min": 10, "range_max": 5}),
        "{recipe}: mine.range_max: 5 must be above range_min (10)",
    ),
    Case(
        "missing-mining-model",
        _set("mine", {"model": "/no/such/model"}),
        "{recipe}: mine.model: model '/no/such/model'",
    ),
    Case(
        "reporting-integration-not-installed",
        _set("train.args.report_to", ["wandb"]),
        "{recipe}: train.args.report_to: wandb not installed here",
    ),
    Case(
        "max-seq-length-beyond-the-model",
        _set("train.max_seq_length", 4096),
        "{recipe}: train.max_seq_length: 4096 exceeds the model's 128 positions",
    ),
    Case(
        "evaluation-dims-above-the-model",
        _set("evaluate.matryoshka_dims", [64, 16]),
        "{recipe}: evaluate.matryoshka_dims: [64] exceed the model's dimension 32",
    ),
    Case(
        "lora-target-the-model-lacks",
        _set("train.peft", {"r": 4, "target_modules": ["q_proj", "query"]}),
        "{recipe}: train.peft.target_modules: ['q_proj'] match no module of the base model; its Linear layers: ",
    ),
    Case(
        "latest-is-a-real-folder",
        _set("push.local_dir", lambda root: _with_latest_folder(root / "copied-by-hand")),
        "latest is a real folder, not the link to the newest release; move it away",
    ),
    Case(
        "link-out-of-the-documents-folder",
        lambda recipe, root: _corpus(files={"leak.txt": _outside(root)})(recipe, root),
        "/docs/leak.txt links to ",
    ),
    Case(
        "link-out-of-the-data-folder",
        _with_link_out,
        "/pairs-folder/b.jsonl links to ",
    ),
    Case(
        "password-in-the-endpoint-url",
        _corpus(generate=_llm("http://alice:s3cret-pass@127.0.0.1:9/v1")),
        "{recipe}: corpus.generate.llm.base_url: holds a password in the URL (alice:...@); keep the key out of the "
        "URL: corpus.generate.llm.api_key_env names an environment variable",
        absent="s3cret-pass",
    ),
    Case(
        "key-in-the-endpoint-query-string",
        _corpus(generate=_llm("http://127.0.0.1:9/v1?api_key=sk-query-secret")),
        "{recipe}: corpus.generate.llm.base_url: holds a credential in the URL's query string",
        absent="sk-query-secret",
    ),
    Case(
        "token-in-job-variables",
        _set("deployment.job_variables", {"env": {"HF_TOKEN": "hf_" + "x" * 34}}),
        "{recipe}: deployment.job_variables.env.HF_TOKEN: a literal secret in the recipe, which is copied beside "
        "every run and into the card; give it as a Prefect Secret block reference, {{ prefect.blocks.secret.",
        absent="x" * 34,
    ),
    Case(
        "hub-token-in-trainer-arguments",
        _set("train.args.hub_token", "hf_" + "y" * 34),
        "{recipe}: train.args.hub_token: a literal secret in the recipe",
        absent="y" * 34,
    ),
    Case(
        "alias-bomb",
        _recipe_file(
            "a: &a ["
            + ",".join(["lol"] * 9)
            + "]\n"
            + "".join(f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdef", "bcdefg"))
        ),
        "{recipe}: line 5: the recipe expands to more than 20,000 values (aliases of aliases?)",
    ),
    Case(
        "nested-too-deep",
        _recipe_file("a: " + "[" * 2000 + "]" * 2000 + "\n"),
        "{recipe}: line 1: nested more than 32 levels deep",
    ),
    Case(
        "recipe-too-large",
        _recipe_file("description: " + "x" * 1_100_000 + "\n"),
        "{recipe}: 1,100,014 bytes; a recipe is a few KB",
    ),
    Case(
        "prompt-reaches-into-an-object",
        _corpus(generate=_llm("http://127.0.0.1:9/v1", prompt="{text.__class__.__init__.__globals__} {text}")),
        "{recipe}: corpus.generate.llm.prompt: the prompt names {text.__class__.__init__.__globals__}, which is no "
        "placeholder; use {text}, {title} and {n}",
    ),
    Case(
        "prompt-indexes-a-placeholder",
        _corpus(generate=_llm("http://127.0.0.1:9/v1", prompt="{text[0]} {text}")),
        "{recipe}: corpus.generate.llm.prompt: the prompt names {text[0]}, which is no placeholder",
    ),
    Case(
        "general-set-is-the-training-file",
        _general_is_the_training_file,
        "{recipe}: evaluate.general[0]: 120 of 120 pairs of faq share a text with the training, eval or test data",
    ),
    Case(
        "corrupt-pdf",
        _corpus(files={"broken.pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ngarbage"}),
        "/docs/broken.pdf: not a readable PDF",
    ),
    Case(
        "html-not-utf8",
        _corpus(files={"page.html": "<p>caf\u00e9 cr\u00e8me</p>".encode("latin-1")}),
        "/docs/page.html: not UTF-8 text (byte 6)",
    ),
    Case(
        "binary-file-named-md",
        _corpus(files={"blob.md": bytes(range(256)) * 4}),
        "/docs/blob.md: a binary file, not text",
    ),
    Case(
        "text-not-utf8",
        _corpus(files={"notes.txt": "na\u00efve notes".encode("latin-1")}),
        "/docs/notes.txt: not UTF-8 text",
    ),
    Case(
        "documents-table-without-its-text-column",
        _corpus(files={"rows.jsonl": b'{"body": "some words here"}\n'}),
        "{recipe}: corpus.text_column: ",
    ),
    Case(
        "chunks-longer-than-the-model-reads",
        _corpus(chunk_tokens=96, overlap=8),
        "{recipe}: corpus.chunk_tokens: 96 tokens is more than the model reads (64, train.max_seq_length)",
    ),
    Case(
        "min-chunk-above-chunk",
        _corpus(min_chunk_tokens=60),
        "{recipe}: corpus.min_chunk_tokens: 60 is above chunk_tokens (48): every chunk would be dropped",
    ),
    Case(
        "rounds-without-a-round-trip",
        _corpus(rounds=2),
        "{recipe}: corpus.rounds: 2 rounds re-judge the pairs by round trip, and filter.round_trip_k is null",
    ),
    Case(
        "empty-choose-candidate",
        _set("mine", {"choose": [{"range_min": 3}, {}]}),
        "{recipe}: mine.choose[1]: names no setting",
    ),
    Case(
        "duplicate-choose-candidates",
        _set("mine", {"choose": [{"range_min": 3}, {"range_min": 3, "num_negatives": 1}]}),
        "{recipe}: mine.choose[1]: mines as choose[0] does; try each setting once",
    ),
    Case(
        "release-inside-the-documents",
        _both(_corpus(), _set("push.local_dir", lambda root: str(root / "docs" / "releases"))),
        "{recipe}: push.local_dir: ",
    ),
    Case(
        "integer-column",
        _rows([r | {"question": i} for i, r in enumerate(make_pairs(30))]),
        "row 1: column 'question' holds int64 values where anchor text belongs",
    ),
    Case(
        "list-column",
        _rows([r | {"context": [r["context"]]} for r in make_pairs(30)]),
        "row 1: column 'context' holds list values where positive text belongs",
    ),
    Case("folder-mixing-formats", _mixed_folder, "mixes or holds unknown formats"),
    Case("csv-row-152-not-utf8", _csv_bad_row_deep, "deep.csv, row 152: not UTF-8 text"),
    Case(
        "row-filter-matches-nothing",
        _set("ingest.where", {"topic": "volcano"}),
        "{recipe}: ingest.path: ",
    ),
    Case(
        "negative-split-seed",
        _set("split.seed", -1),
        "{recipe}: split.seed: Input should be greater than or equal to 0",
    ),
    Case("negative-trainer-seed", _set("train.args.seed", -3), "{recipe}: train.args.seed: -3 is negative"),
    Case(
        "gate-on-a-triplet-metric-without-negatives",
        _set("evaluate.gates", {"cosine_accuracy": 0.5}),
        "{recipe}: evaluate.gates.cosine_accuracy: no evaluator reports 'cosine_accuracy' (the test data has no "
        "negative column: no triplet metrics)",
    ),
    Case(
        "gate-written-as-a-percent",
        _set("evaluate.gates", {"gain": 5}),
        "{recipe}: evaluate.gates.gain: 5 is above 1; metrics are fractions: for 5 % write 0.05",
    ),
    Case(
        "general-drop-written-as-a-percent",
        _both(_general_is_the_training_file, _set("evaluate.max_general_drop", 2)),
        "{recipe}: evaluate.max_general_drop: 2 is above 1",
    ),
    Case(
        "export-drop-written-as-a-percent",
        _set("export", {"max_drop": 5}),
        "{recipe}: export.max_drop: Input should be less than or equal to 1",
    ),
    Case(
        "best-model-with-nothing-saved",
        _set("train.args.load_best_model_at_end", True),
        "{recipe}: train.args.load_best_model_at_end: has no effect with save_strategy 'no' (nothing is saved)",
    ),
    Case(
        "rerank-base-model-missing",
        _set("rerank", lambda root: {"base_model": str(root / "no-reranker")}),
        "{recipe}: rerank.base_model: model '{root}/no-reranker': no such folder",
    ),
    Case(
        "rerank-loss-needs-teacher-scores",
        _set("rerank", lambda root: {"base_model": str(root / "tiny-model"), "loss": "MarginMSELoss"}),
        "{recipe}: rerank.loss: MarginMSELoss needs a teacher's score margin for each (query, positive, negative), "
        "which the run's pairs lack",
    ),
    Case(
        "rerank-loss-misspelt",
        _set("rerank", lambda root: {"base_model": str(root / "tiny-model"), "loss": "BinaryCrossEntropy"}),
        "{recipe}: rerank.loss: 'BinaryCrossEntropy' is not a CrossEncoder loss — did you mean BinaryCrossEntropyLoss?",
    ),
    Case(
        "rerank-top-k-covers-the-test-split",
        _set("rerank", lambda root: {"base_model": str(root / "tiny-model"), "top_k": 30}),
        "{recipe}: rerank.top_k: 30 is not below the 30 passages of the test split (split.test_size 0.25 of the data)",
    ),
    Case(
        "rerank-gate-misspelt",
        _set("rerank", lambda root: {"base_model": str(root / "tiny-model"), "gates": {"over_embeder": 0}}),
        "{recipe}: rerank.gates.over_embeder: unknown gate — did you mean over_embedder?",
    ),
    Case(
        "rerank-trainer-argument-misspelt",
        _set("rerank", lambda root: {"base_model": str(root / "tiny-model"), "args": {"num_train_epoch": 1}}),
        "{recipe}: rerank.args.num_train_epoch: unknown key — did you mean num_train_epochs?",
    ),
    Case(
        "name-escapes-the-run-directory",
        _set("ingest.name", "../escape"),
        "{recipe}: ingest.name: '../escape' is also a file name in the run directory",
    ),
    Case(
        "name-reads-as-a-glob",  # found by the fuzz test: the split's own files were not found
        _set("ingest.name", "{text[0]}"),
        "{recipe}: ingest.name: '{text[0]}' is also a file name, read as a glob pattern: no [ ] { }",
    ),
]


@pytest.fixture
def world(tiny_model, pairs_file, tmp_path, recipe_dict):
    """A good recipe, its data, and a release published earlier that no mistake may touch."""
    published = tmp_path / "published"
    shutil.copytree(tiny_model, published / "tiny-test-earlier")
    (published / "tiny-test-earlier" / "training_meta.json").write_text('{"recipe": "tiny-test"}')
    (published / "latest").symlink_to("tiny-test-earlier")
    return recipe_dict, tmp_path


def _fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode() + (path.read_bytes() if path.is_file() else b"/"))
    return digest.hexdigest() + str((folder / "latest").resolve())


def _prepare(case: Case, recipe: dict, root: Path) -> Path:
    path = case.change(recipe, root)
    if path is None:
        path = root / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.parametrize("case", VALIDATE, ids=lambda c: c.id)
def test_validate_refuses_with_one_line_per_problem(case, world, monkeypatch):
    recipe, root = world
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    before = _fingerprint(root / "published")
    path = _prepare(case, recipe, root)
    result = cli("validate", path)
    assert result.exit_code == 1, result.output
    assert case.expected.replace("{recipe}", str(path)).replace("{root}", str(root)) in result.output
    assert not case.absent or case.absent not in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert _fingerprint(root / "published") == before


def test_every_seed_recipe_passes_the_recipe_only_check():
    result = cli("validate", "--recipe-only", *sorted(Path("deployments").glob("*.yaml")))
    assert result.exit_code == 0, result.output


def test_set_keeps_a_word_the_user_typed(world, write_recipe):
    recipe, _ = world
    from embedforge.recipe import load_recipe

    loaded = load_recipe(write_recipe(recipe), ["train.args.save_strategy=no", "push.private=false"])
    assert loaded.train.args["save_strategy"] == "no" and loaded.push.private is False


RUN = [
    Case("bad-json-row", _data(make_pairs(30), b'{"question": "broken", \n'), "bad.jsonl, row 31: not valid JSON"),
    Case(
        "non-utf8-row",
        _data(make_pairs(30), '{"question": "caf\u00e9", "context": "x", "topic": "t"}\n'.encode("latin-1")),
        "bad.jsonl, row 31: not UTF-8 text",
    ),
    Case(
        "too-few-rows-after-cleaning", _data([make_pairs(1)[0]] * 30), "1 usable rows after cleaning, need at least 10"
    ),
    Case("output-dir-is-a-file", lambda recipe, root: None, "--output-dir: "),
    Case(
        "temporary-server-slower-than-its-timeout",
        lambda recipe, root: None,
        "the temporary Prefect server did not start within 1 s",
        env={"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"},
    ),
    Case(
        "api-url-unreachable",
        lambda recipe, root: None,
        "PREFECT_API_URL=http://127.0.0.1:9/api does not answer",
        env={"PREFECT_API_URL": "http://127.0.0.1:9/api"},
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", RUN, ids=lambda c: c.id)
def test_run_refuses_with_one_line_and_no_traceback(case, world, tmp_path):
    recipe, root = world
    before = _fingerprint(root / "published")
    path = _prepare(case, recipe, root)
    output_dir = root / "data" / "pairs.jsonl" if case.id == "output-dir-is-a-file" else root / "runs"
    env = embedded_env(tmp_path) | case.env
    command = [str(Path(sys.executable).parent / "embedforge"), "run", str(path), "--output-dir", str(output_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert case.expected in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert _fingerprint(root / "published") == before
    assert not _processes_of(tmp_path / "prefect-home")  # no temporary server left behind


def _processes_of(home: Path) -> list[int]:
    """Processes started with this PREFECT_HOME: a temporary server would be one."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"PREFECT_HOME={home}".encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _training_refusal(monkeypatch, recipe_dict: dict, tmp_path: Path, raised: BaseException) -> str:
    """The message run_training ends with when the trainer raises `raised` (no GPU or full disk needed)."""
    from sentence_transformers import SentenceTransformerTrainer

    from embedforge.errors import EmbedforgeError
    from embedforge.recipe import Recipe
    from embedforge.tasks.ingest import ingest_dataset
    from embedforge.tasks.split import split_dataset
    from embedforge.training.run import run_training

    def fail(self, *args, **kwargs):
        raise raised

    monkeypatch.setattr(SentenceTransformerTrainer, "train", fail)
    recipe = Recipe.model_validate(recipe_dict)
    data = ingest_dataset.fn(recipe.ingest, str(tmp_path / "in"))
    splits = split_dataset.fn(recipe.split, data, [], {}, str(tmp_path / "sp"))
    with pytest.raises(EmbedforgeError) as error:
        run_training(recipe.train, splits, recipe.evaluate, tmp_path / "run")
    return str(error.value)


def test_out_of_gpu_memory_says_what_to_change(monkeypatch, recipe_dict, tmp_path):
    import torch

    # What CUDA raises when a batch does not fit.
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert _training_refusal(monkeypatch, recipe_dict, tmp_path, oom) == (
        "train: out of GPU memory at per_device_train_batch_size = 16. Lower train.args.per_device_train_batch_size, "
        "or keep the batch's in-batch negatives with train.loss.name: CachedMultipleNegativesRankingLoss and "
        "train.loss.args.mini_batch_size: 32 (memory of a 32-row batch)"
    )


def test_an_adapter_with_a_peft_too_old_for_transformers_is_refused_before_training(monkeypatch, recipe_dict):
    pytest.importorskip("peft")
    import importlib.metadata

    from embedforge.checks.training import check_training
    from embedforge.recipe import Recipe

    monkeypatch.setattr("transformers.integrations.peft.MIN_PEFT_VERSION", "99.0")
    recipe_dict["train"]["peft"] = {"r": 8}
    ((field, problem),) = check_training(Recipe.model_validate(recipe_dict).train, has_eval=True)
    assert field == "train.peft"
    assert problem == (
        f"transformers {importlib.metadata.version('transformers')} needs peft >= 99.0, and peft "
        f"{importlib.metadata.version('peft')} is installed: upgrade peft, or use transformers < 5.24 with it"
    )


def test_a_disk_too_small_for_the_run_is_found_before_training(monkeypatch, world, write_recipe):
    import collections

    import embedforge.checks.space
    from embedforge.cli.preflight import preflight
    from embedforge.errors import EmbedforgeError
    from embedforge.recipe import load_recipe

    recipe, root = world
    path = write_recipe(recipe)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(embedforge.checks.space.shutil, "disk_usage", lambda folder: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(EmbedforgeError) as error:
        preflight(load_recipe(path), str(path), str(root / "runs"))
    lines = str(error.value).splitlines()
    assert lines[0].startswith(f"{path}: --output-dir: {root} has 0.0 GB free; this run writes about ")
    assert "(the model, its checkpoints with optimizer state, the release)" in lines[0]


def test_a_disk_that_fills_anyway_is_one_line_and_leaves_no_staging_folder(monkeypatch, tiny_model, tmp_path):
    import errno

    import embedforge.tasks.push
    from embedforge.config.push import PushConfig
    from embedforge.errors import EmbedforgeError
    from embedforge.tasks.push import _publish_local

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(embedforge.tasks.push.shutil, "copy2", full)
    published = tmp_path / "published"
    files = {p.name: p for p in Path(tiny_model).iterdir() if p.is_file()}
    with pytest.raises(EmbedforgeError) as error:
        _publish_local(PushConfig(local_dir=str(published)), files, {}, "tiny-r1")
    assert str(error.value) == (
        f"push: the disk of {published} is full ([Errno 28] No space left on device); nothing was published"
    )
    assert list(published.iterdir()) == []  # no hidden staging folder keeping the disk full


def test_a_disk_that_fills_during_training_is_one_line_naming_the_run(monkeypatch, recipe_dict, tmp_path):
    import errno

    full = OSError(errno.ENOSPC, "No space left on device")  # what a checkpoint save raises on a full disk
    assert _training_refusal(monkeypatch, recipe_dict, tmp_path, full) == (
        f"train: the disk of {tmp_path / 'run'} is full ([Errno 28] No space left on device); free space and resume"
    )


def test_what_the_audit_found_refused_wrongly_is_accepted(world):
    """YAML merge keys (with a top-level x- key holding the anchor), a cron shortcut Prefect takes, a section whose
    keys are all commented out."""
    recipe, root = world
    arguments = yaml.safe_dump({"train": {"args": recipe["train"]["args"]}}, sort_keys=False)
    body = yaml.safe_dump({k: v for k, v in recipe.items() if k != "train"}, sort_keys=False)
    text = (
        "x-trainer: &trainer\n" + "\n".join("  " + line for line in arguments.splitlines()[2:]) + "\n"
        f"{body}"
        f"train:\n  base_model: {recipe['train']['base_model']}\n  max_seq_length: 64\n"
        "  args:\n    <<: *trainer\n    learning_rate: 1.0e-4\n"
        "card:\n  # language: [en]\n"
        "deployment:\n  schedule:\n    cron: '@daily'\n"
    )
    path = root / "accepted.yaml"
    path.write_text(text.replace("card:\n  language:\n  - en\n  license: apache-2.0\n", ""))
    result = cli("validate", path)
    assert result.exit_code == 0, result.output
    from embedforge.recipe import load_recipe

    loaded = load_recipe(path)
    assert loaded.train.args["learning_rate"] == 1e-4  # written beside the merge key: it wins, as YAML says
    assert loaded.train.args["num_train_epochs"] == recipe["train"]["args"]["num_train_epochs"]  # merged in
    assert loaded.deployment.schedule.cron == "@daily" and loaded.card.language == []


def test_a_general_set_the_model_trains_on_is_refused_in_the_run_too(recipe_dict, tmp_path):
    from embedforge.errors import EmbedforgeError
    from embedforge.recipe import Recipe
    from embedforge.tasks.ingest import ingest_dataset
    from embedforge.tasks.split import check_general_overlap, split_dataset

    recipe = Recipe.model_validate(recipe_dict)
    data = ingest_dataset.fn(recipe.ingest, str(tmp_path / "in"))
    splits = split_dataset.fn(recipe.split, data, [], {}, str(tmp_path / "sp"))
    unrelated = write_jsonl(
        tmp_path / "general" / "other.jsonl", [{"anchor": f"q{i}", "positive": f"p{i}"} for i in range(20)]
    )
    ingested = ingest_dataset.fn(
        recipe.ingest.model_copy(update={"path": str(unrelated), "columns": {}, "keep": []}), str(tmp_path / "g")
    )
    assert check_general_overlap.fn(recipe.split, splits.model_copy(update={"general": {"other": ingested.path}})) == {
        "other": "0 of 20"
    }
    with pytest.raises(EmbedforgeError) as refused:
        check_general_overlap.fn(recipe.split, splits.model_copy(update={"general": {"faq": data.path}}))
    assert str(refused.value).startswith(
        "evaluate.general: 120 of 120 pairs of faq share a text with the training, eval or test split"
    )


def test_a_release_beside_a_documents_file_is_not_among_the_documents(tmp_path):
    # One .jsonl of documents: the folder it sits in is not read, so a release written there is no document.
    from embedforge.checks.corpus import _check_release_outside
    from embedforge.recipe import Recipe

    (tmp_path / "documents.jsonl").write_text('{"id": "a", "text": "A page."}\n')
    recipe = {"name": "docs", "train": {"base_model": "m"}, "ingest": {"name": "docs"}}
    beside = recipe | {"corpus": {"path": str(tmp_path / "documents.jsonl")}, "push": {"local_dir": str(tmp_path)}}
    assert _check_release_outside(Recipe.model_validate(beside)) == []
    inside = beside | {"corpus": {"path": str(tmp_path)}, "push": {"local_dir": str(tmp_path / "published")}}
    ((field, problem),) = _check_release_outside(Recipe.model_validate(inside))
    assert field == "push.local_dir" and "is inside corpus.path" in problem
