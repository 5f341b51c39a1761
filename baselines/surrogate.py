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
from dataclasses import asdict
from pathlib import Path

import numpy as np
import optuna
from optuna.samplers import BaseSampler, RandomSampler
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsRegressor

from baselines.blackbox import COMMON_OPTIONS, BlackBoxSearcher, Ledger, NothingToPropose, Proposal
from baselines.features import FISHER_BATCH, FeatureExtractor, FeatureSet
from baselines.fixed import FIXED_ACTIVATIONS
from baselines.proxy import DEFAULT_FRACTION, ProxyConfig, ProxyEvaluator
from baselines.regularized_evolution import random_genotype
from baselines.space import genotype_params
from bench.runs import epoch_samples
from bench.searchers import Method, SearchOutcome, fixed_genotype, register
from bench.tasks import Metric
from bench.training import Cost
from grafs.errors import UserError, unknown_name
from grafs.genotype import Genotype

EMBEDDINGS = ("umap", "pca")
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

    def __init__(self, searcher: SurrogateSearcher, metric: Metric, extract: FeatureExtractor | None, seed: int):
        self.searcher, self.metric, self.extract, self.seed = searcher, metric, extract, seed
        self.fixed = [(genotype, genotype.fingerprint()) for genotype in map(fixed_genotype, FIXED_ACTIVATIONS)]
        self.pool: list[Genotype] = []
        self.fingerprints: list[str] = []
        self.embedding: np.ndarray | None = None

    def __call__(self, study: optuna.Study, ledger: Ledger) -> Proposal:
        fixed = next((genotype for genotype, f in self.fixed if f not in ledger.cache), None)
        if fixed is not None:
            return Proposal(genotype_params(fixed, self.searcher.tune_betas))
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
        predicted = knn_predict(self.embedding[list(rows)], targets, self.embedding[untried], self.searcher.k)
        sign = 1.0 if self.metric.direction == "max" else -1.0
        best = int(np.argmax(sign * predicted))  # the first of equals, in pool order
        attrs = {"pool_index": untried[best], "predicted_score": float(predicted[best])}
        if setup.sample_passes or setup.wall_seconds:
            attrs.update(features_seconds=setup.wall_seconds, features_sample_passes=setup.sample_passes)
        fitting = Cost(time.perf_counter() - started)
        params = genotype_params(self.pool[untried[best]], self.searcher.tune_betas)
        return Proposal(params, attrs, setup + fitting)

    def _prepare(self) -> Cost:
        """The pool, its features and their embedding: what AQuaSurF computes before its first prediction."""
        if self.extract is None:
            raise UserError("the surrogate search needs a feature extractor to embed its pool")
        started = time.perf_counter()
        self.pool = build_pool(self.searcher.pool_size, self.seed, self.searcher.space, self.searcher.tune_betas)
        self.fingerprints = [genotype.fingerprint() for genotype in self.pool]
        features = self.extract(self.pool)
        self.embedding = embed(feature_matrix(features), self.searcher.dims, self.searcher.embedding, self.seed)
        return Cost(time.perf_counter() - started, features.cost.train_samples, features.cost.eval_samples)


class SurrogateSearcher(BlackBoxSearcher):
    """AQuaSurF-style search: fixed activations first, then the pool member the surrogate rates best."""

    def __init__(
        self,
        *,
        pool_size: int = 500,
        k: int = 3,
        dims: int = 2,
        embedding: str = "umap",
        fisher_batch: int = FISHER_BATCH,
        proxy_fraction: float = DEFAULT_FRACTION,
        proxy_epochs: int | None = None,
        proxy_iterations: int | None = None,
        tune_betas: bool = False,
        space: str = "standard",
    ):
        if embedding not in EMBEDDINGS:
            raise unknown_name("embedding", embedding, EMBEDDINGS)
        for name, value, least in (
            ("pool_size", pool_size, len(FIXED_ACTIVATIONS) + 2),
            ("k", k, 1),
            ("dims", dims, 1),
            ("fisher_batch", fisher_batch, 1),
        ):
            if value < least:
                raise UserError(f"the surrogate's {name} must be at least {least}, got {value}")
        self.configure("surrogate", ProxyConfig(proxy_fraction, proxy_epochs, proxy_iterations), tune_betas, space)
        self.pool_size, self.k, self.dims = pool_size, k, dims
        self.embedding, self.fisher_batch = embedding, fisher_batch

    @property
    def config(self) -> dict:
        return {
            "sampler": self.method,
            "pool_size": self.pool_size,
            "k": self.k,
            "dims": self.dims,
            "embedding": self.embedding,
            "fisher_batch": self.fisher_batch,
            "fixed_first": list(FIXED_ACTIVATIONS),
            "tune_betas": self.tune_betas,
            "space": self.space,
            "proxy": asdict(self.proxy),
        }

    def make_sampler(self, seed: int) -> BaseSampler:
        return RandomSampler(seed=seed)  # never asked: every candidate is a proposal

    def search(self, task, seed, budget, *, data, out, device="cpu", progress=None) -> SearchOutcome:
        evaluate = ProxyEvaluator(task, data, seed, self.proxy, device)
        extract = FeatureExtractor(task, data, seed, device, self.fisher_batch)
        proposer = SurrogateProposer(self, task.metric, extract, seed)
        return self.run(task, seed, budget, evaluate, Path(out), epoch_samples(task, data), progress, proposer)


register(
    Method(
        "surrogate",
        "AQuaSurF-style surrogate search: output and Fisher-spectrum features, UMAP embedding, k-NN regression",
        lambda **options: SurrogateSearcher(**options),
        {**COMMON_OPTIONS, "pool_size": int, "k": int, "dims": int, "embedding": str, "fisher_batch": int},
    )
)
