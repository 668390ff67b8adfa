"""Retrieval metrics at every Matryoshka dim from one encoding: the library's evaluators, sharing their embeddings."""

from __future__ import annotations

import hashlib

from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator

from embedforge.uncertainty import PerQueryRetrievalEvaluator


class TruncatedRetrievalEvaluator(PerQueryRetrievalEvaluator):
    """An InformationRetrievalEvaluator that slices full-size embeddings from a shared cache.

    Matryoshka dims are prefixes of one embedding, so encoding once and truncating per
    dim gives the same numbers as re-encoding at every dim, at 1/len(dims) of the cost.
    """

    cache: dict | None = None

    def embed_inputs(self, model, sentences, encode_fn_name=None, prompt_name=None, prompt=None, **kwargs):
        if self.cache is None:
            return super().embed_inputs(model, sentences, encode_fn_name, prompt_name, prompt, **kwargs)
        key = (encode_fn_name, prompt_name, prompt, hashlib.sha1("\x00".join(sentences).encode()).hexdigest())
        if key not in self.cache:
            dim, self.truncate_dim = self.truncate_dim, None
            try:
                self.cache[key] = super().embed_inputs(model, sentences, encode_fn_name, prompt_name, prompt, **kwargs)
            finally:
                self.truncate_dim = dim
        return self.cache[key][..., : self.truncate_dim]


class MatryoshkaRetrievalEvaluator(SequentialEvaluator):
    """Retrieval metrics at every Matryoshka dim, each text encoded once per call."""

    def __init__(self, evaluators: list[TruncatedRetrievalEvaluator]):
        super().__init__(evaluators)

    def __call__(self, model, output_path=None, epoch=-1, steps=-1):
        cache: dict = {}
        for evaluator in self.evaluators:
            evaluator.cache = cache
        try:
            results = super().__call__(model, output_path, epoch, steps)
        finally:
            for evaluator in self.evaluators:
                evaluator.cache = None
        # The full-size dim leads; its primary metric stands for the group (not "sequential_score").
        results.pop("sequential_score", None)
        self.primary_metric = self.evaluators[0].primary_metric
        return results
