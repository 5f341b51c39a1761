"""Regularized (aging) evolution over the GRAFS cell, as an Optuna sampler.

Real et al. (2019): the population is the ``population_size`` most recent finished trials, so
every candidate dies of age rather than by score; each child mutates the best of
``sample_size`` members drawn at random. The first ``population_size`` candidates are uniformly
random cells. Mutations follow PANGAEA (Bingham & Miikkulainen 2022), restricted to the fixed
cell: change one slot's operation, regenerate a slot together with every slot feeding it (a
subtree), or move a slot to a neighbouring operation in the space's canonical order; with tuned
betas, also perturb one beta.

A proposal is a pure function of the seed and the finished trials, so a resumed study proposes
exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from baselines.blackbox import BlackBoxSearcher
from baselines.options import RegularizedEvolutionOptions
from baselines.space import BETA_RANGE, distributions, genotype_from_params, genotype_params
from grafs.errors import UserError
from grafs.genotype import Genotype
from grafs.ops import SLOTS, operation, slot_candidates

MUTATIONS = ("change", "regenerate", "neighbour")
BETA_MUTATION = "perturb_beta"
BETA_STEP = 0.5

# The slots that feed each slot in f(x) = b1(u2(b0(u0(x), u1(x))), u3(x)), the slot included.
SUBTREES: dict[str, tuple[str, ...]] = {
    "u0": ("u0",),
    "u1": ("u1",),
    "b0": ("u0", "u1", "b0"),
    "u2": ("u0", "u1", "b0", "u2"),
    "u3": ("u3",),
    "b1": SLOTS,
}


def _random_slot(slot: str, rng: np.random.Generator, space: str, tune_betas: bool) -> tuple[str, float | None]:
    op = slot_candidates(slot, space)[rng.integers(len(slot_candidates(slot, space)))]
    if op.beta_init_mean is None or not tune_betas:
        return op.name, op.beta_init_mean
    return op.name, float(rng.uniform(*BETA_RANGE))


def random_genotype(rng: np.random.Generator, space: str = "standard", tune_betas: bool = False) -> Genotype:
    ops, betas = zip(*(_random_slot(slot, rng, space, tune_betas) for slot in SLOTS), strict=True)
    return Genotype(ops, betas)


def mutate(
    parent: Genotype, rng: np.random.Generator, space: str = "standard", tune_betas: bool = False,
    kind: str | None = None,
) -> Genotype:
    """One PANGAEA-style mutation of ``parent`` (``kind`` drawn at random unless given)."""
    kinds = MUTATIONS + ((BETA_MUTATION,) if tune_betas and any(b is not None for b in parent.betas) else ())
    kind = kind or kinds[rng.integers(len(kinds))]
    ops, betas = list(parent.ops), list(parent.betas)
    if kind == BETA_MUTATION:
        index = int(rng.choice([i for i, beta in enumerate(betas) if beta is not None]))
        betas[index] = float(np.clip(betas[index] + rng.normal(0.0, BETA_STEP), *BETA_RANGE))
        return Genotype(ops, betas)
    index = int(rng.integers(len(SLOTS)))
    slot = SLOTS[index]
    names = [op.name for op in slot_candidates(slot, space)]
    position = names.index(ops[index])
    if kind == "regenerate":
        for feeding in SUBTREES[slot]:
            i = SLOTS.index(feeding)
            ops[i], betas[i] = _random_slot(feeding, rng, space, tune_betas)
        return Genotype(ops, betas)
    if kind == "change":
        offset = 1 + int(rng.integers(len(names) - 1))  # any operation but the current one
    elif kind == "neighbour":
        offset = 1 if rng.random() < 0.5 else -1
    else:
        raise UserError(f"unknown mutation {kind!r}; valid choices: {', '.join(MUTATIONS + (BETA_MUTATION,))}")
    ops[index] = names[(position + offset) % len(names)]
    betas[index] = operation(ops[index]).beta_init_mean  # the new operation starts at its initial beta
    return Genotype(ops, betas)


class CellSampler(BaseSampler):
    """An Optuna sampler that proposes whole GRAFS cells, each chosen from the finished trials.

    Subclasses implement :meth:`propose`; its random generator is seeded by the run's seed and
    the number of finished trials, so a resumed study proposes what an uninterrupted one would.
    """

    def __init__(self, seed: int | None = None, space: str = "standard", tune_betas: bool = False):
        self.space, self.tune_betas = space, tune_betas
        self._seed = int(np.random.SeedSequence().entropy % 2**32) if seed is None else seed
        self._fallback = RandomSampler(seed=seed)

    def propose(self, study: optuna.Study, finished: list[FrozenTrial], rng: np.random.Generator) -> Genotype:
        raise NotImplementedError

    def random_cell(self, rng: np.random.Generator) -> Genotype:
        return random_genotype(rng, self.space, self.tune_betas)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return distributions(self.space, self.tune_betas)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, object]:
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        rng = np.random.default_rng([self._seed, len(finished)])
        return genotype_params(self.propose(study, finished, rng), self.tune_betas)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> object:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)


class RegularizedEvolutionSampler(CellSampler):
    """Aging evolution of GRAFS cells; plug into any study built on :mod:`baselines.space`."""

    def __init__(
        self, population_size: int = 20, sample_size: int = 5, seed: int | None = None, space: str = "standard",
        tune_betas: bool = False,
    ):
        RegularizedEvolutionOptions(population=population_size, sample_size=sample_size)  # checks the sizes
        super().__init__(seed, space, tune_betas)
        self.population_size, self.sample_size = population_size, sample_size

    def propose(self, study: optuna.Study, finished: list[FrozenTrial], rng: np.random.Generator) -> Genotype:
        if len(finished) < self.population_size:
            return self.random_cell(rng)
        population = finished[-self.population_size :]
        contenders = [population[i] for i in rng.choice(len(population), self.sample_size, replace=False)]
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        parent = max(contenders, key=lambda t: sign * t.value)  # the first of equals
        return mutate(genotype_from_params(parent.params, self.tune_betas), rng, self.space, self.tune_betas)


def regularized_evolution_search(method: str, options: RegularizedEvolutionOptions) -> BlackBoxSearcher:
    def sampler(seed: int) -> RegularizedEvolutionSampler:
        return RegularizedEvolutionSampler(options.population, options.sample_size, seed, options.space,
                                           options.tune_betas)

    return BlackBoxSearcher(method, options, sampler)
