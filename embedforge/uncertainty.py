"""How sure a figure is: each test query's own figures, and bootstrap intervals over the queries.

A retrieval metric is a mean over queries, so resampling the queries shows how much it would move on
another test split of the same size. Two models measured on the same queries are compared pair by pair
(a paired bootstrap): their difference varies far less than either figure alone.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

from embedforge.figures import Interval

# A half-width above this cannot tell apart the changes a fine-tune usually makes (a few hundredths).
TOO_WIDE = 0.02
FEWEST_QUERIES = 30  # below it, the too-small warning is given whatever the interval says
RESAMPLES = 2000
SEED = 0  # the same figures always get the same interval
NO_INTERVAL = "intervals are drawn for retrieval metrics, which are means over queries; this one is not"


class PerQueryRetrievalEvaluator(InformationRetrievalEvaluator):
    """The library's retrieval evaluator, which also keeps each query's figures in `per_query` and each score
    function's ranking of the corpus in `rankings` (what the keyword baselines fuse with).

    Each query is scored by the library's own metric code, so the mean of a metric's per-query
    figures is the figure the evaluator reports.
    """

    per_query: dict[str, list[float]] | None = None
    rankings: dict[str, list[list[dict]]] | None = None
    _scored: list[tuple[list, list[dict]]] | None = None  # each score function's ranking and figures, in __call__

    def __call__(self, model, output_path=None, epoch=-1, steps=-1, *args, **kwargs):
        self._scored = []
        try:
            metrics = super().__call__(model, output_path, epoch, steps, *args, **kwargs)
            scored = dict(zip(self.score_functions, self._scored))
        finally:
            self._scored = None
        self.rankings = {function: ranking for function, (ranking, _) in scored.items()}
        self.per_query = {}
        for function, (_, queries) in scored.items():
            self.per_query |= self.keyed(function, queries)
        return metrics

    def keyed(self, function: str, queries: list[dict]) -> dict[str, list[float]]:
        """{full metric key, as the evaluator names it: each query's figure} of the library's per-query metrics."""
        prefix = f"{self.name}_" if self.name else ""
        return {
            f"{prefix}{function}_{metric.replace('@k', f'@{k}')}": [float(query[metric][k]) for query in queries]
            for metric, values in (queries[0].items() if queries else [])
            for k in values
        }

    def each_query(self, queries_result_list: list) -> list[dict]:
        """The library's metrics of each query alone, from one ranking per query."""
        ids = self.queries_ids
        texts = self.queries
        each = []
        try:
            for n, result in enumerate(queries_result_list):
                self.queries_ids, self.queries = [ids[n]], [texts[n]]
                each.append(super().compute_metrics([result]))
        finally:
            self.queries_ids, self.queries = ids, texts
        return each

    def compute_metrics(self, queries_result_list: list[object]):
        totals = super().compute_metrics(queries_result_list)
        if self._scored is not None:  # inside __call__: the ranking and each query's figures are kept too
            self._scored.append((queries_result_list, self.each_query(queries_result_list)))
        return totals


def interval(values: list[float]) -> Interval | None:
    """The 95 % percentile-bootstrap interval of the mean; None for fewer than two values."""
    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=float)
    if np.ptp(data) == 0:
        return Interval(low=float(data[0]), high=float(data[0]), n=len(data))
    found = bootstrap(
        (data,), np.mean, n_resamples=RESAMPLES, method="percentile", rng=np.random.default_rng(SEED)
    ).confidence_interval
    return Interval(low=float(found.low), high=float(found.high), n=len(data))


def paired(before: list[float] | None, after: list[float] | None) -> Interval | None:
    """The 95 % interval of after - before, query by query; None when they were not measured on the same queries."""
    if not before or not after or len(before) != len(after):
        return None
    return interval([b - a for a, b in zip(before, after)])


def beyond_noise(difference: Interval | None) -> bool | None:
    """Is the difference above zero beyond the noise? None when there is no interval to tell."""
    return None if difference is None else difference.low > 0


def better_beyond_noise(low: float | None, figure: float, reference: float) -> bool:
    """Does a candidate replace the reference? Only when the low end of the difference's interval lies above 0;
    without per-query figures to draw one (low is None: a non-retrieval eval split), when its figure is higher."""
    return low > 0 if low is not None else figure > reference


def gain_line(gain: float, difference: Interval) -> str:
    """The gain as the log and the terminal summary say it."""
    return f"gain {gain:+.4f}, {difference.signed} over {difference.n} test queries"


def too_small(intervals: dict[str, Interval]) -> str | None:
    """The warning for a test split too small to tell the changes a fine-tune makes: the gain's interval is wider
    than ±TOO_WIDE, or there are fewer than FEWEST_QUERIES queries (a bootstrap of a handful can come out of width
    0). None otherwise, or when there is no interval."""
    gain = intervals.get("gain")
    if gain is None:
        return None
    if gain.half_width <= TOO_WIDE:
        if gain.n >= FEWEST_QUERIES:
            return None
        return (
            f"the test split is too small to tell: {gain.n} queries are too few for any figure or interval drawn from "
            f"them to mean much; add test queries, {FEWEST_QUERIES} at the very least (split.test_file, written by "
            "people)"
        )
    width = f"over {gain.n} queries the gain's 95 % interval is ±{gain.half_width:.3f}"
    advice = (
        "It narrows with the square root of the number of queries (four times as many halve it): add test queries "
        "(split.test_file, written by people)"
    )
    if gain.low > 0 or gain.high < 0:  # this gain is told apart from 0; the next, smaller one may not be
        return (
            f"the test split is small: {width}. This gain lies beyond it, but a smaller difference (the next run "
            f"against this one) would be noise. {advice}"
        )
    return f"the test split is too small to tell: {width}, so a difference smaller than that is noise. {advice}"
