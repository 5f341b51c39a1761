"""Surrogate-model search in the style of AQuaSurF (Bingham & Miikkulainen 2023).

AQuaSurF picks the next activation to train from a large pool of distinct functions by a cheap
surrogate: every function's features (:mod:`baselines.features`: its output distribution and
the Fisher spectrum of the network at initialisation) are embedded in a few dimensions with
UMAP, and a k-nearest-neighbour regression from that embedding to the validation score predicts
how well an untried function would do. The loop here:

1. train the fixed activations (ReLU, GELU, SiLU, ELU, LeakyReLU) first: they need no prediction;
2. build the pool, the fixed activations and then random cells of the GRAFS space until
   ``pool_size`` distinct functions (deduplicated by fingerprint), compute the features of the
   whole pool and embed them (once: UMAP is unsupervised);
3. repeatedly refit the k-NN regression on every function trained so far and train the untried
   pool member with the best prediction, until the budget is spent or the pool is exhausted.

It runs in the black-box loop of :mod:`baselines.blackbox` as a proposer, so it shares the proxy
scoring, the budget, the trace, deduplication and the resumable Optuna study. The pool, its
features and their embedding are charged to the candidate they were computed for (their seconds
and sample passes), each k-NN fit to the candidate it chose; after a resume they are recomputed
(deterministically) without being charged again. Every prediction goes into the trace with the
running rank correlation between predicted and measured scores, the surrogate's own quality.

Two choices the paper leaves open are fixed here: the two feature blocks are standardised per
column and weighted to equal total variance before the embedding, and a diverged function enters
the regression with the worst score measured so far (its -inf or +inf would poison the mean).
"""

from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np
import optuna
from optuna.samplers import RandomSampler
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsRegressor

from baselines.blackbox import BlackBoxSearcher, Ledger, NothingToPropose, Proposal
from baselines.features import FeatureExtractor, FeatureSet
from baselines.fixed import fixed_genotype
from baselines.options import SurrogateOptions
from baselines.regularized_evolution import random_genotype
from baselines.space import genotype_params
from bench.activations import FIXED_ACTIVATIONS
from bench.tasks import Metric
from grafs.cost import Cost
from grafs.errors import UserError
from grafs.genotype import Genotype

POOL_ATTEMPTS = 20
"""Random cells drawn per wanted pool member before a pool is declared as large as the space allows."""

UMAP_NEIGHBOURS = 15


def build_pool(size: int, seed: int, space: str = "standard", tune_betas: bool = False) -> list[Genotype]:
    """The fixed activations, then random cells, ``size`` distinct functions in all (fewer only if the
    space has fewer distinct functions to offer within ``POOL_ATTEMPTS * size`` draws)."""
    rng = np.random.default_rng([seed, 7])
    pool, seen = [], set()
    candidates = (fixed_genotype(name) for name in FIXED_ACTIVATIONS)
    for _ in range(POOL_ATTEMPTS * size):
        genotype = next(candidates, None) or random_genotype(rng, space, tune_betas)
        fingerprint = genotype.fingerprint()
        if fingerprint not in seen:
            seen.add(fingerprint)
            pool.append(genotype)
        if len(pool) == size:
            break
    return pool


def feature_matrix(features: FeatureSet) -> np.ndarray:
    """Both feature blocks, each column standardised and each block scaled to the same total variance."""
    blocks = []
    for block in (features.outputs, features.spectra):
        spread = block.std(axis=0)
        standard = np.divide(block - block.mean(axis=0), spread, out=np.zeros_like(block), where=spread > 0)
        blocks.append(standard / math.sqrt(max(1, int((spread > 0).sum()))))
    return np.concatenate(blocks, axis=1)


def embed(matrix: np.ndarray, dims: int, method: str, seed: int) -> np.ndarray:
    """A ``dims``-dimensional embedding of the rows of ``matrix``: UMAP (as AQuaSurF) or PCA."""
    if method == "pca":
        return PCA(n_components=min(dims, *matrix.shape), random_state=seed).fit_transform(matrix)
    # Numba's OpenMP threads (UMAP compiles with Numba) fight torch's own: every training after
    # the embedding ran 30x slower here. Numba's plain thread pool leaves torch alone.
    os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # UMAP's notes on its single-threaded, seeded mode
        reducer = umap.UMAP(
            n_components=dims, n_neighbors=min(UMAP_NEIGHBOURS, len(matrix) - 1), random_state=seed, n_jobs=1
        )
        return reducer.fit_transform(matrix)


def knn_predict(trained: np.ndarray, scores: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The k-nearest-neighbour regression of ``scores`` on the ``trained`` points, at ``queries``
    (neighbours weighted by inverse distance, so a query on a trained point predicts its score)."""
    model = KNeighborsRegressor(n_neighbors=min(k, len(trained)), weights="distance")
    return model.fit(trained, scores).predict(queries)


def regression_targets(scores: list[float], metric: Metric) -> np.ndarray:
    """Measured scores with diverged ones (non-finite) replaced by the worst finite score."""
    values = np.asarray(scores, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    worst = finite.min() if metric.direction == "max" else finite.max()
    return np.where(np.isfinite(values), values, worst)


class SurrogateProposer:
    """The AQuaSurF choice of the next candidate, for :meth:`BlackBoxSearcher.run`."""

    def __init__(self, options: SurrogateOptions, metric: Metric, extract: FeatureExtractor | None, seed: int):
        self.options, self.metric, self.extract, self.seed = options, metric, extract, seed
        self.fixed = [(genotype, genotype.fingerprint()) for genotype in map(fixed_genotype, FIXED_ACTIVATIONS)]
        self.pool: list[Genotype] = []
        self.fingerprints: list[str] = []
        self.embedding: np.ndarray | None = None

    def __call__(self, study: optuna.Study, ledger: Ledger) -> Proposal:
        fixed = next((genotype for genotype, f in self.fixed if f not in ledger.cache), None)
        if fixed is not None:
            return Proposal(genotype_params(fixed, self.options.tune_betas))
        setup = Cost()
        if self.embedding is None:
            setup = self._prepare()
            if any("features_seconds" in trial.user_attrs for trial in ledger.trials):
                setup = Cost()  # charged before a resume: recomputing them is not the search's cost
        started = time.perf_counter()
        untried = [i for i, fingerprint in enumerate(self.fingerprints) if fingerprint not in ledger.cache]
        if not untried:
            raise NothingToPropose(f"every function of the pool ({len(self.pool)}) was trained")
        index = {fingerprint: i for i, fingerprint in enumerate(self.fingerprints)}
        trained = [(index[f], trial.value) for f, trial in ledger.cache.items() if f in index]
        rows, scores = zip(*trained, strict=True)
        targets = regression_targets(list(scores), self.metric)
        predicted = knn_predict(self.embedding[list(rows)], targets, self.embedding[untried], self.options.neighbours)
        sign = 1.0 if self.metric.direction == "max" else -1.0
        best = int(np.argmax(sign * predicted))  # the first of equals, in pool order
        attrs = {"pool_index": untried[best], "predicted_score": float(predicted[best])}
        if setup.sample_passes or setup.wall_seconds:
            attrs.update(features_seconds=setup.wall_seconds, features_sample_passes=setup.sample_passes)
        fitting = Cost(time.perf_counter() - started)
        params = genotype_params(self.pool[untried[best]], self.options.tune_betas)
        return Proposal(params, attrs, setup + fitting)

    def _prepare(self) -> Cost:
        """The pool, its features and their embedding: what AQuaSurF computes before its first prediction."""
        if self.extract is None:
            raise UserError("the surrogate search needs a feature extractor to embed its pool")
        started = time.perf_counter()
        self.pool = build_pool(self.options.pool_size, self.seed, self.options.space, self.options.tune_betas)
        self.fingerprints = [genotype.fingerprint() for genotype in self.pool]
        features = self.extract(self.pool)
        self.embedding = embed(feature_matrix(features), self.options.dims, self.options.embedding, self.seed)
        return Cost(time.perf_counter() - started, features.cost.train_samples, features.cost.eval_samples)


def surrogate_search(method: str, options: SurrogateOptions) -> BlackBoxSearcher:
    """AQuaSurF-style search: fixed activations first, then the pool member the surrogate rates best.
    Every candidate is a proposal, so the study's sampler is never asked."""

    def proposer(task, data, seed, device) -> SurrogateProposer:
        extract = FeatureExtractor(task, data, seed, device, options.fisher_batch)
        return SurrogateProposer(options, task.metric, extract, seed)

    return BlackBoxSearcher(method, options, lambda seed: RandomSampler(seed=seed), proposer=proposer)
