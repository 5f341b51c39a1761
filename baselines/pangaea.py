"""Evolution in the style of PANGAEA (Bingham & Miikkulainen 2022) over the GRAFS cell.

PANGAEA evolves the form of an activation function and learns its parameters by gradient descent,
separately for different parts of the network. Here, in the same cell as every other method:

- **Generations** (mu + lambda): the first ``population`` candidates are random cells; after that,
  every generation of ``offspring`` candidates is bred from the survivors, the ``population`` best
  distinct functions evaluated before the generation began. A ``newcomer_share`` of each
  generation are fresh random cells, which keeps the population diverse.
- **Selection** of a parent among the survivors: ``rank`` (probability falling linearly with its
  rank, the best ``population`` times as likely as the worst) or ``tournament`` (the best of
  ``TOURNAMENT_SIZE`` survivors drawn at random).
- **Mutations** of the parent: change one slot's operation, regenerate a slot with every slot
  feeding it, insert a parametric operation (a pass-through slot, or else another slot without a
  beta, takes ``add_beta`` / ``mul_beta`` / ``beta_mix``), or remove one (a parametric slot becomes a
  pass-through). Insert and remove fall back to a change where the cell offers no such slot.
- **Per-layer parameters** (``per_layer``, on by default): every activation site of the network
  gets its own copy of the betas, trained with the weights, in each candidate's proxy training and
  again when the found activation is retrained (a campaign adds that retraining as a second
  variant next to the shared fixed betas GRAFS retrains with).

A proposal is a pure function of the seed and the finished trials (as in
:mod:`baselines.regularized_evolution`), so a resumed study proposes what the uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from baselines import regularized_evolution
from baselines.blackbox import BlackBoxSearcher
from baselines.options import PangaeaOptions
from baselines.regularized_evolution import BETA_MUTATION, CellSampler
from baselines.space import BETA_RANGE, genotype_from_params
from grafs.errors import UserError
from grafs.genotype import Genotype
from grafs.ops import SLOT_ARITY, SLOTS, operation

MUTATIONS = ("change", "regenerate", "insert", "remove")
TOURNAMENT_SIZE = 3

PASS_THROUGH = {1: ("identity",), 2: ("left", "right")}
"""Operations that hand an input on unchanged: where a cell has room to insert an operation."""

INSERTABLE = {1: ("add_beta", "mul_beta"), 2: ("beta_mix",)}
"""Parametric operations that keep their inputs (the constant ``beta`` would replace, not insert)."""


def _beta_for(name: str, rng: np.random.Generator, tune_betas: bool) -> float | None:
    mean = operation(name).beta_init_mean
    if mean is None or not tune_betas:
        return mean
    return float(rng.uniform(*BETA_RANGE))


def insert_parametric(parent: Genotype, rng: np.random.Generator, tune_betas: bool = False) -> Genotype | None:
    """A parametric operation in a pass-through slot (else in any slot without a beta); None if every slot has one."""
    free = [i for i, beta in enumerate(parent.betas) if beta is None]
    passing = [i for i in free if parent.ops[i] in PASS_THROUGH[SLOT_ARITY[SLOTS[i]]]]
    choices = passing or free
    if not choices:
        return None
    index = int(rng.choice(choices))
    options = INSERTABLE[SLOT_ARITY[SLOTS[index]]]
    name = options[int(rng.integers(len(options)))]
    ops, betas = list(parent.ops), list(parent.betas)
    ops[index], betas[index] = name, _beta_for(name, rng, tune_betas)
    return Genotype(ops, betas, parent.bounded)


def remove_parametric(parent: Genotype, rng: np.random.Generator) -> Genotype | None:
    """A parametric slot turned into a pass-through (a binary one keeps one input); None if there is none."""
    parametric = [i for i, beta in enumerate(parent.betas) if beta is not None]
    if not parametric:
        return None
    index = int(rng.choice(parametric))
    options = PASS_THROUGH[SLOT_ARITY[SLOTS[index]]]
    ops, betas = list(parent.ops), list(parent.betas)
    ops[index], betas[index] = options[int(rng.integers(len(options)))], None
    return Genotype(ops, betas, parent.bounded)


def mutate(
    parent: Genotype,
    rng: np.random.Generator,
    space: str = "standard",
    tune_betas: bool = False,
    kind: str | None = None,
) -> Genotype:
    """One PANGAEA mutation of ``parent`` (``kind`` drawn at random unless given)."""
    kinds = MUTATIONS + ((BETA_MUTATION,) if tune_betas and any(b is not None for b in parent.betas) else ())
    kind = kind or kinds[rng.integers(len(kinds))]
    if kind not in kinds:
        raise UserError(f"unknown mutation {kind!r}; valid choices: {', '.join(kinds)}")
    child = None
    if kind == "insert":
        child = insert_parametric(parent, rng, tune_betas)
    elif kind == "remove":
        child = remove_parametric(parent, rng)
    else:
        child = regularized_evolution.mutate(parent, rng, space, tune_betas, kind)
    return child or regularized_evolution.mutate(parent, rng, space, tune_betas, "change")


class PangaeaSampler(CellSampler):
    """Generational PANGAEA evolution of GRAFS cells, as an Optuna sampler."""

    def __init__(
        self,
        population: int = 20,
        offspring: int = 10,
        newcomer_share: float = 0.2,
        selection: str = "rank",
        seed: int | None = None,
        space: str = "standard",
        tune_betas: bool = False,
    ):
        PangaeaOptions(population=population, offspring=offspring, newcomer_share=newcomer_share,
                       selection=selection)  # checks the settings
        self.population, self.offspring, self.newcomer_share, self.selection = (
            population,
            offspring,
            newcomer_share,
            selection,
        )
        super().__init__(seed, space, tune_betas)

    def survivors(self, trials: list[FrozenTrial], direction: StudyDirection) -> list[FrozenTrial]:
        """The ``population`` best distinct functions among ``trials``, best first (the earlier of equals)."""
        sign = 1.0 if direction == StudyDirection.MAXIMIZE else -1.0
        ranked = sorted(trials, key=lambda t: (-sign * t.value, t.number))
        kept, seen = [], set()
        for trial in ranked:
            key = trial.user_attrs.get("fingerprint") or tuple(sorted(trial.params.items()))
            if key not in seen:
                seen.add(key)
                kept.append(trial)
        return kept[: self.population]

    def select(self, survivors: list[FrozenTrial], rng: np.random.Generator) -> FrozenTrial:
        if self.selection == "tournament":
            drawn = rng.choice(len(survivors), min(TOURNAMENT_SIZE, len(survivors)), replace=False)
            return survivors[int(min(drawn))]  # survivors are sorted best first
        weights = np.arange(len(survivors), 0, -1, dtype=float)
        return survivors[int(rng.choice(len(survivors), p=weights / weights.sum()))]

    def propose(self, study: optuna.Study, finished: list[FrozenTrial], rng: np.random.Generator) -> Genotype:
        if len(finished) < self.population or rng.random() < self.newcomer_share:
            return self.random_cell(rng)
        generation = (len(finished) - self.population) // self.offspring
        bred_from = finished[: self.population + generation * self.offspring]
        parent = self.select(self.survivors(bred_from, study.direction), rng)
        return mutate(genotype_from_params(parent.params, self.tune_betas), rng, self.space, self.tune_betas)


def pangaea_search(method: str, options: PangaeaOptions) -> BlackBoxSearcher:
    """PANGAEA-style evolution; with ``per_layer`` its candidates learn their betas per activation site
    (the genotype's betas are where every site's own betas start)."""

    def sampler(seed: int) -> PangaeaSampler:
        return PangaeaSampler(options.population, options.offspring, options.newcomer_share, options.selection, seed,
                              options.space, options.tune_betas)

    return BlackBoxSearcher(method, options, sampler, learnable_betas=options.per_layer)
