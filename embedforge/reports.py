"""The tables and markdown a person reads: in the dashboard's artifacts and in the model card, written once."""

from __future__ import annotations

import json

from embedforge.data_reports import FilterReport, MiningReport
from embedforge.figures import RerankFigures
from embedforge.types import BackendTrial, MergeTrial, Metrics, RoundTrial, Splits
from embedforge.uncertainty import NO_INTERVAL, RESAMPLES, too_small


def gain_table(metrics: Metrics) -> list[dict]:
    """Rows of metric, base, fine-tuned, their difference and, for the headline, the difference's 95 % interval;
    then, where the test split is retrieval data, BM25 and the hybrid of BM25 and the fine-tuned model."""
    gain = metrics.intervals.get("gain")
    rows = []
    for key, value in metrics.finetuned.items():
        if key not in metrics.base:
            continue
        row = {"metric": key, "base": round(metrics.base[key], 4), "fine-tuned": round(value, 4)}
        row["delta"] = round(value - metrics.base[key], 4)
        row["delta 95 % CI"] = f"[{gain.low:+.4f}, {gain.high:+.4f}]" if gain and key == metrics.headline else ""
        for name, figures in metrics.baselines.items():
            row[BASELINES[name]] = round(figures[key], 4) if key in figures else None
        rows.append(row)
    return rows


BASELINES = {"bm25": "BM25", "hybrid": "hybrid"}


def doubt_markdown(metrics: Metrics) -> str:
    """How far the headline's figures can be trusted: their intervals, and a warning when the split is too small."""
    found = metrics.intervals
    if "gain" not in found:
        return f"No interval for {metrics.headline}: {NO_INTERVAL}."
    text = (
        f"Over the {found['gain'].n} test queries, 95 % bootstrap intervals ({RESAMPLES} resamples of the queries): "
        f"base {found['base']}, fine-tuned {found['finetuned']}, gain {found['gain'].signed} (paired: both models "
        "on the same resampled queries)."
    )
    if over := found.get("over_bm25"):
        text += f" Fine-tuned minus BM25 on the same queries: {over.signed}."
    if warning := too_small(found):
        text += f"\n\n**Warning:** {warning}."
    return text


def general_markdown(metrics: Metrics, max_drop: float | None) -> str:
    """Each general set's primary metric for both models: what the fine-tune kept of general ability."""
    rows = "".join(
        f"| {name} | {key} | {metrics.base[key]:.4f} | {metrics.finetuned[key]:.4f} | "
        f"{metrics.finetuned[key] - metrics.base[key]:+.4f} |\n"
        for name, (key, *_) in metrics.general.items()
    )
    bound = f"a drop over {max_drop} (`evaluate.max_general_drop`) rejects the run" if max_drop is not None else ""
    return (
        "Retrieval sets outside the domain (`evaluate.general`), measured for both models with the same "
        f"evaluators{'; ' + bound if bound else ''}.\n\n"
        f"| set | metric | base | fine-tuned | Δ |\n|:--|:--|--:|--:|--:|\n{rows}"
    )


def merge_markdown(trials: list[MergeTrial], method: str) -> str:
    """Every weight `merge` tried: its eval figure, its difference from the model as trained and general sets'
    changes, the one kept in bold."""
    names = list(trials[0].general_drop)
    head = f"| fine-tuned share | eval {trials[0].metric} | vs 1, 95 % CI" + "".join(
        f" | general {n}, change" for n in names
    )
    rows = "".join(
        f"| {'**' if t.chosen else ''}{t.weight:g}{'**' if t.chosen else ''} | {t.figure:.4f} | "
        + ("-" if t.versus_unmerged is None else "[{:+.4f}, {:+.4f}]".format(*t.versus_unmerged))
        + "".join(f" | {-t.general_drop[n]:+.4f}" for n in names)
        + " |\n"
        for t in trials
    )
    (kept,) = [t for t in trials if t.chosen]
    return (
        f"The fine-tuned model merged with its base ({method}), each weight measured on the **eval** split and the "
        f"general sets; kept: **{kept.weight:g}** (1 is the fine-tuned model as trained, which a merge replaces only "
        f"when better beyond the noise: the interval of the difference, over the eval queries, above 0). The test "
        f"split was read only afterwards, by the model kept.\n\n{head} |\n|--:|--:|:--|{'--:|' * len(names)}\n{rows}"
    )


def rounds_markdown(trials: list[RoundTrial]) -> str:
    """Every round `corpus.rounds` ran: its training pairs, its eval figure and its difference from the round kept
    before, the one kept in bold."""
    rows = "".join(
        f"| {'**' if t.kept else ''}{t.round}{'**' if t.kept else ''} | {t.pairs} | {t.figure:.4f} | "
        + ("-" if t.versus_kept is None else "[{:+.4f}, {:+.4f}]".format(*t.versus_kept))
        + " |\n"
        for t in trials
    )
    (kept,) = [t for t in trials if t.kept]
    return (
        "From the second round on, the model kept so far re-judged the training pairs (round trip) and re-mined them "
        "when the recipe mines, and the base model trained again on what it kept. Each round was measured on the "
        "**eval** split; a round replaces the one kept before only when better beyond the noise (the 95 % interval "
        f"of the difference, over the eval queries, above 0). Kept: **round {kept.round}**. The test split was read "
        f"only afterwards, by the model kept.\n\n| round | training pairs | eval {kept.metric} | vs the round kept "
        f"before, 95 % CI |\n|--:|--:|--:|:--|\n{rows}"
    )


def export_markdown(trials: list[BackendTrial], max_drop: float) -> str:
    """Each backend beside the PyTorch model (the first row), whether it shipped, and why any one did not."""
    reference = trials[0]

    def row(t: BackendTrial) -> str:
        shipped = "yes" if t.kept else "**no**"
        if t.figure is None:
            return f"| {t.backend} | {shipped} | | | | |\n"
        speed, change = (
            f"{t.texts_per_s:.0f} ({t.texts_per_s / reference.texts_per_s:.2f}×)",
            t.figure - reference.figure,
        )
        return f"| {t.backend} | {shipped} | {t.figure:.4f} | {change:+.4f} | {speed} | `{t.file}` |\n"

    # Reasons below the table: a long one (an exporter's error) would push the table's columns out of sight.
    left_out = "".join(f"- {t.backend} left out: {t.reason}\n" for t in trials if not t.kept)
    return (
        f"Each backend measured on the test split ({reference.metric}) with the PyTorch model's evaluators, and "
        "timed on the same texts, batch size and threads (texts/s, and the speed-up over PyTorch); one that loses "
        f"more than {max_drop:g} (`export.max_drop`) is left out of the release.\n\n"
        "| backend | in the release | figure | change | texts/s | file |\n"
        f"|:--|:--|--:|--:|--:|:--|\n{''.join(row(t) for t in trials)}" + (f"\n{left_out}" if left_out else "")
    )


def mining_markdown(report: MiningReport) -> str:
    scores = (
        f"| similarity anchor–positive | {report.positive_score:.4f} |\n"
        f"| similarity anchor–negative | {report.negative_score:.4f} |\n"
        if report.positive_score is not None
        else ""
    )
    share = f" ({report.in_batch_only_rows / report.rows:.0%})" if report.rows else ""
    warnings = "".join(f"\n> **Warning:** {warning}.\n" for warning in report.warnings)
    return (
        f"| | |\n|:--|--:|\n| training pairs | {report.rows} |\n"
        f"| with {report.negatives_per_anchor} mined negative(s) | {report.mined_rows} |\n"
        f"| in-batch negatives only | {report.in_batch_only_rows}{share} |\n"
        f"| same-group candidates skipped | {report.same_group_skipped} |\n{scores}{warnings}\n"
        f"Mined with `{report.model}` among the training split's passages; settings: "
        f"`{json.dumps(report.settings, sort_keys=True)}`\n"
    )


def trials_markdown(splits: Splits) -> str:
    """What mine.choose tried, each candidate's eval-split figure, and the mining report of the one chosen."""
    rows = "".join(
        f"| {'**' + t.name + '**' if t.chosen else t.name} | `{json.dumps(t.settings or {}, sort_keys=True)}` | "
        f"{'-' if t.without_negative is None else t.without_negative} | {t.figure:.4f} | "
        f"{'-' if t.versus_none is None else '[{:+.4f}, {:+.4f}]'.format(*t.versus_none)} |\n"
        for t in splits.mining_trials
    )
    (chosen,) = [t for t in splits.mining_trials if t.chosen]
    text = (
        f"Each candidate trained a short run and was measured on the **eval** split ({chosen.metric}); a candidate "
        "replaces no mining only when it is better beyond the noise (the 95 % interval of the difference, eval "
        f"query by eval query, above 0). Kept: **{chosen.name}**. The test split was read only afterwards, by the "
        f"full run.\n\n| candidate | settings | pairs without a negative | eval {chosen.metric} "
        f"| vs no mining, 95 % CI |\n|:--|:--|--:|--:|--:|\n{rows}"
    )
    return text + (f"\n{mining_markdown(splits.mining)}" if splits.mining else "")


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def corpus_markdown(report: FilterReport, samples: list[dict] | None = None) -> str:
    """How the training pairs were made: documents, chunks, requests, cache hits, tokens, drops, a few samples."""
    generated = report.generation
    rows = [
        ("documents", generated.documents),
        ("chunks", generated.chunks),
        (
            f"chunks given queries now ({generated.method}{': requests' if generated.method == 'llm' else ''})",
            generated.generated,
        ),
        ("chunks whose queries came from the cache", generated.cached),
        ("pairs generated", generated.pairs),
        *[(f"dropped: {name.replace('_', ' ')}", count) for name, count in report.dropped.items()],
        ("pairs kept for training", report.kept),
    ]
    if generated.prompt_tokens or generated.completion_tokens:
        rows += [("prompt tokens", generated.prompt_tokens), ("completion tokens", generated.completion_tokens)]
    table = "| | |\n|:--|--:|\n" + "".join(f"| {name} | {value} |\n" for name, value in rows)
    if report.warning:
        table = f"> **Warning:** {report.warning}.\n\n" + table
    if samples:
        table += "\n| query | passage |\n|:--|:--|\n"
        table += "".join(f"| {_cell(s['anchor'])} | {_cell(s['positive'])} |\n" for s in samples)
    return table


RERANK_STAGES = {
    "embedder": "embedder alone",
    "base reranker": "embedder + base reranker",
    "fine-tuned reranker": "embedder + fine-tuned reranker",
}


def rerank_markdown(rerank: RerankFigures) -> str:
    """The embedder alone and two-stage with each reranker over its top_k, with intervals, latency and verdict."""
    over = rerank.intervals.get("over_embedder")
    rows = [f"`{rerank.metric}` on the test split:", "", "| Stage | figure | 95 % CI | Δ | Δ 95 % CI |"]
    rows.append("|:--|--:|--:|--:|--:|")
    for name, label in RERANK_STAGES.items():
        figure = rerank.figures[name]
        found = rerank.intervals.get(name)
        versus = "" if name == "embedder" else f"{figure - rerank.figures['embedder']:+.4f}"
        paired = f"[{over.low:+.4f}, {over.high:+.4f}]" if name == "fine-tuned reranker" and over else ""
        band = "" if found is None else f"[{found.low:.4f}, {found.high:.4f}]"
        rows.append(f"| {label} | {figure:.4f} | {band} | {versus} | {paired} |")
    verdict = "In the release" if rerank.kept else f"**Left out of the release**: {rerank.reason}"
    head = ""
    if rerank.untrained_head:
        head = " The base reranker's head was untrained (added by the library to a model without one)."
    return (
        "\n".join(rows)
        + f"\n\nΔ: minus the embedder alone, query by query. The reranker reorders the embedder's top {rerank.top_k} "
        "passages per query; the rest keep the "
        f"embedder's order. It scores one query's {rerank.top_k} passages in {rerank.ms_per_query:.1f} ms on CPU "
        f"(median).{head} {verdict}."
    )
