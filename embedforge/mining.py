"""What a mining run's figures say: when most pairs got no negative, or the negatives crowd their positives,
the likely cause and the setting to change. The log, the mining artifact and the card show the same words.

The thresholds are the published ones: NV-Retriever (Moreira et al., 2024) treats a candidate scoring above
95 % of its positive as a likely false negative; "most pairs" is more than half of them.
"""

from __future__ import annotations

from embedforge.config.mine import MineConfig
from embedforge.data_reports import MiningReport

CLOSE = 0.95  # a negative above this share of its positive's score is likely a false one
MOST = 0.5  # more than this share of pairs without a negative: mining did little


def mining_warnings(config: MineConfig, report: MiningReport) -> list[str]:
    """Zero, one or two sentences, each naming what happened, its likely cause and what to change."""
    warnings = []
    if report.rows and report.in_batch_only_rows / report.rows > MOST:
        share = (
            f"{report.in_batch_only_rows} of {report.rows} training pairs "
            f"({report.in_batch_only_rows / report.rows:.0%}) got no mined negative"
        )
        warnings.append(f"{share}: {_why_none(config, report)}")
    pos = report.positive_score
    neg = report.negative_score
    if pos is not None and neg is not None and pos > 0 and neg >= CLOSE * pos:
        warnings.append(
            f"the mined negatives score {neg:.4f} on average against {pos:.4f} for their positives (above "
            f"{CLOSE:.0%} of it): many are likely false negatives, passages that answer the query too. Keep "
            "candidates below 90% of the positive's score (mine.relative_margin: 0.1, which beat mining without "
            "a margin on both data sets in bench/RESULTS.md), and let mine.choose compare it with no mining"
        )
    return warnings


def _why_none(config: MineConfig, report: MiningReport) -> str:
    window = (
        f"mine.range_max, now {config.range_max}" if config.range_max else "mine.range_max, unset: a narrow default"
    )
    if report.own_group_rows >= report.few_candidates_rows:
        return (
            "their nearest candidates were passages of their own group (split.group_by), which are never "
            f"negatives. Widen the window ({window}) so that enough candidates of other groups remain"
        )
    filters = [
        name
        for name in ("absolute_margin", "relative_margin", "max_score", "min_score")
        if getattr(config, name) is not None
    ]
    if filters:
        return (
            f"within the window the library ranks ({window}) nearly every candidate failed "
            f"{', '.join(f'mine.{name}' for name in filters)}: the base model scores the neighbours of a positive "
            "about as high as the positive itself. Widen the window (mine.range_max: 100) or loosen "
            f"{' / '.join(filters)}, and compare with no mining: on such data mining may not help"
        )
    return f"the training split has too few other passages for {config.num_negatives} each; lower mine.num_negatives"
